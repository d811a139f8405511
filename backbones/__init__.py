"""3D backbones (voxel and point-based), heads and training recipes."""

from backbones import pointnet, spunet, train, train_mm  # noqa: F401  (register entries)
from backbones.registry import BACKBONES, RECIPES  # noqa: F401
