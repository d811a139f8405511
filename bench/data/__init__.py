"""Scenes, datasets (synthetic and real), corruptions and 2D->3D projection."""

from bench.data import corrupt, datasets  # noqa: F401  (register entries)
from bench.data.datasets import DATASETS, get_dataset  # noqa: F401
from bench.data import real  # noqa: F401, E402  (real-dataset readers)
