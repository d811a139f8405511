"""Scenes, datasets (synthetic and real), corruptions and 2D<->3D camera geometry.

Layers, bottom up: ``classes`` and ``scene`` (the one scene format), ``geometry`` (projection, used by
the readers, the synthetic world and ``teachers.lift``), ``datasets`` (the registry and specs),
``corrupt``, ``synth/`` (the built-in world) and ``real/`` (real-dataset readers). Nothing here
imports from ``teachers/``.
"""

from bench.data import corrupt, datasets, real, synth  # noqa: F401  (register entries)
from bench.data.corrupt import CORRUPTIONS  # noqa: F401
from bench.data.corrupt import corrupt as apply_corruption  # noqa: F401
from bench.data.datasets import (  # noqa: F401
    DATASETS,
    SPLITS,
    CorruptedDataset,
    Dataset,
    DatasetSpec,
    dataset_config,
    get_dataset,
)
from bench.data.scene import FrameSkips, Scene, View, read_scene, write_scene  # noqa: F401
