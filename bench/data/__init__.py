"""Scenes, datasets (synthetic and real), corruptions and 2D<->3D camera geometry.

Layers, bottom up: ``classes`` and ``scene`` (the one scene format), ``geometry`` (projection, used by
the readers, the synthetic world and ``teachers.lift``), ``datasets`` (the registry and specs),
``corrupt``, ``synth/`` (the built-in world) and ``real/`` (real-dataset readers). Nothing here
imports from ``teachers/``.
"""

from bench.data import corrupt, datasets, real, synth  # noqa: F401  (register entries)
from bench.data.corrupt import CORRUPTIONS, corrupt as apply_corruption  # noqa: F401
from bench.data.datasets import DATASETS, SPLITS, CorruptedDataset, Dataset, DatasetSpec, dataset_config, get_dataset  # noqa: F401
from bench.data.scene import FrameSkips, Scene, View, read_scene, write_scene  # noqa: F401
