"""Scenes, datasets (synthetic and real), corruptions and 2D->3D projection."""

from bench.data import (  # noqa: F401  (register entries)
    corrupt,
    datasets,
    real,  # noqa: F401, E402  (real-dataset readers)
)
from bench.data.datasets import DATASETS, get_dataset  # noqa: F401
