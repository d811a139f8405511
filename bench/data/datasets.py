"""The dataset registry, the ``Dataset`` interface and dataset specs.

A dataset spec is ``NAME`` or ``NAME:CORRUPTION@SEVERITY`` (e.g. ``synth-scannet:jitter@3``): the
corruption is applied to every scene the dataset yields, deterministically per scene.

Every dataset is registered with ``config=`` (a dataclass of all its options, with defaults) and a
factory called as ``factory(cfg=cfg)``. Options (a grid's ``[data_options.NAME]``, ``--data-root``)
are validated by ``dataset_config``: an unknown option raises a BenchError listing the valid ones.
The synthetic domains register in ``bench.data.synth.dataset``, the real datasets in
``bench.data.real``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bench.cache import stable_hash
from bench.data.classes import NUM_CLASSES
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.registry import Registry, make_config

log = logging.getLogger(__name__)

DATASETS = Registry("dataset")
SPLITS = ("train", "val", "test")


class Dataset:
    """A source of scenes in the shared class space. Subclasses set ``name`` and ``classes``."""

    name: str
    classes: tuple[int, ...]  # shared class ids this dataset labels
    has_views: bool = True

    def scene_names(self, split: str, count: int | None = None) -> list[str]:
        raise NotImplementedError

    def load(self, name: str, with_views: bool = True) -> Scene:
        raise NotImplementedError

    def ensure(self, names: list[str], workers: int = 1) -> None:
        """Make the named scenes available on disk (generated datasets generate them; others have them)."""

    def check(self, names: list[str], normals: bool = False) -> list[str]:
        """Problems of the named scenes that would stop a cell reading them, one line each naming the
        file and the fix (``normals``: the cells' input features include normals). Run before any work
        starts; datasets that make their own scenes (``ensure``) have none to report."""
        return []

    def fingerprint(self) -> dict:
        """What identifies the data (for cache keys)."""
        return {"dataset": self.name}

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise BenchError(f"unknown split '{split}' for dataset {self.name}; valid: {', '.join(SPLITS)}")


@dataclass(frozen=True)
class DatasetSpec:
    base: str
    corruption: str | None = None
    severity: int = 0

    @classmethod
    def parse(cls, spec: str) -> DatasetSpec:
        if ":" not in spec:
            return cls(spec)
        base, _, corr = spec.partition(":")
        name, _, sev = corr.partition("@")
        try:
            severity = int(sev)
        except ValueError:
            raise BenchError(f"dataset spec '{spec}': expected NAME:CORRUPTION@SEVERITY with SEVERITY 1-5") from None
        if not 1 <= severity <= 5:
            raise BenchError(f"dataset spec '{spec}': severity must be 1-5, got {severity}")
        return cls(base, name, severity)

    def __str__(self) -> str:
        return self.base if self.corruption is None else f"{self.base}:{self.corruption}@{self.severity}"


class CorruptedDataset(Dataset):
    """A dataset whose scenes pass through one corruption at one severity."""

    def __init__(self, base: Dataset, corruption: str, severity: int, cfg: Any = None):
        from bench.data.corrupt import CORRUPTIONS

        self.base, self.corruption, self.severity = base, corruption, severity
        self.entry = CORRUPTIONS.get(corruption)
        self.cfg = make_config(self.entry, {}, "corruption") if cfg is None else cfg
        self.name = f"{base.name}:{corruption}@{severity}"
        self.classes, self.has_views = base.classes, base.has_views

    def scene_names(self, split, count=None):
        return self.base.scene_names(split, count)

    def ensure(self, names, workers=1):
        self.base.ensure(names, workers)

    def check(self, names, normals=False):
        return self.base.check(names, normals)

    def load(self, name, with_views=True):
        scene = self.base.load(name, with_views)
        out = self.entry.factory(cfg=self.cfg, scene=scene, severity=self.severity,
                                 seed=int(stable_hash([self.name, name], 8), 16))
        out.dataset = self.name
        return out.validate(num_classes=NUM_CLASSES)

    def fingerprint(self):
        return {**self.base.fingerprint(), "corruption": self.corruption, "severity": self.severity}


def dataset_config(spec: str | DatasetSpec, options: dict[str, Any] | None = None):
    """The validated config of a spec's base dataset from ``options`` (unknown keys raise, listing the
    valid ones; TOML lists become tuples)."""
    base = (spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(spec)).base
    return make_config(DATASETS.get(base), dict(options or {}), "dataset")


def get_dataset(spec: str, *, cfg: Any = None, **options) -> Dataset:
    """Build a dataset from its spec and either its built ``cfg`` or its ``options`` (e.g. ``root=...``)."""
    ds = DatasetSpec.parse(spec)
    entry = DATASETS.get(ds.base)
    if cfg is None:
        cfg = dataset_config(ds, options)
    elif options:
        raise BenchError(f"dataset '{spec}': pass either cfg or options, not both (got {sorted(options)})")
    elif entry.config is not None and not isinstance(cfg, entry.config):
        raise BenchError(f"dataset '{spec}': cfg must be a {entry.config.__name__}, got {type(cfg).__name__}")
    base = entry.factory(cfg=cfg)
    return base if ds.corruption is None else CorruptedDataset(base, ds.corruption, ds.severity)
