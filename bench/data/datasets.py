"""The dataset registry and the synthetic datasets.

A dataset spec is ``NAME`` or ``NAME:CORRUPTION@SEVERITY`` (e.g. ``synth-scannet:jitter@3``): the
corruption is applied to every scene the dataset yields, deterministically per scene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bench.cache import cache_dir, file_lock, stable_hash
from bench.data.classes import NUM_CLASSES
from bench.data.scene import Scene, read_scene, write_scene
from bench.errors import BenchError
from bench.registry import Registry

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

    def __init__(self, base: Dataset, corruption: str, severity: int):
        from bench.data.corrupt import CORRUPTIONS

        self.base, self.corruption, self.severity = base, corruption, severity
        self.fn = CORRUPTIONS.get(corruption).factory
        self.name = f"{base.name}:{corruption}@{severity}"
        self.classes, self.has_views = base.classes, base.has_views

    def scene_names(self, split, count=None):
        return self.base.scene_names(split, count)

    def ensure(self, names, workers=1):
        self.base.ensure(names, workers)

    def load(self, name, with_views=True):
        scene = self.base.load(name, with_views)
        out = self.fn(scene, self.severity, seed=int(stable_hash([self.name, name], 8), 16))
        out.dataset = self.name
        return out.validate(num_classes=NUM_CLASSES)

    def fingerprint(self):
        return {**self.base.fingerprint(), "corruption": self.corruption, "severity": self.severity}


def get_dataset(spec: str, **options) -> Dataset:
    """Build a dataset from its spec; ``options`` go to the base dataset's factory (e.g. data_root)."""
    ds = DatasetSpec.parse(spec)
    base = DATASETS.build(ds.base, **options)
    return base if ds.corruption is None else CorruptedDataset(base, ds.corruption, ds.severity)


# ------------------------------------------------------------------------------- synthetic datasets
class SynthDataset(Dataset):
    """A synthetic domain: scenes generated on first use into the cache, then read from disk."""

    def __init__(self, domain: str, seed: int = 0, root: str | Path | None = None):
        from bench.data import synth

        self.synth = synth
        self.domain = synth.DOMAINS[domain]
        self.name, self.seed, self.classes = domain, seed, self.domain.classes
        self.root = Path(root) if root else cache_dir() / "scenes" / f"{domain}-v{synth.GENERATOR_VERSION}-s{seed}"

    def scene_names(self, split: str, count: int | None = None) -> list[str]:
        self._check_split(split)
        n = 8 if count is None else count
        if n > self.synth.SPLIT_SIZES[split]:
            raise BenchError(f"{self.name}: at most {self.synth.SPLIT_SIZES[split]} {split} scenes, asked {n}")
        return [f"{split}_{i:04d}" for i in range(n)]

    def path(self, name: str) -> Path:
        return self.root / name

    def ensure(self, names: list[str], workers: int = 1) -> None:
        """Generate the scenes of ``names`` that are not on disk yet (in parallel if workers > 1)."""
        missing = [n for n in names if not (self.path(n) / "coord.npy").is_file()]
        if not missing:
            return
        log.info("%s: generating %d scenes into %s", self.name, len(missing), self.root)
        if workers > 1 and len(missing) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as ex:
                list(ex.map(_generate_in_worker, [(self.name, self.seed, str(self.root), n) for n in missing]))
        else:
            for n in missing:
                _generate_one((self.name, self.seed, str(self.root), n))

    def load(self, name: str, with_views: bool = True) -> Scene:
        self.ensure([name])
        return read_scene(self.path(name), self.name, "segment.npy", None, NUM_CLASSES, with_views)

    def fingerprint(self):
        return {"dataset": self.name, "seed": self.seed, "generator": self.synth.GENERATOR_VERSION}


def _generate_in_worker(args) -> None:
    import torch

    torch.set_num_threads(1)
    _generate_one(args)


def _generate_one(args) -> None:
    from bench.data import synth

    domain, seed, root, name = args
    path = Path(root) / name
    with file_lock(Path(root) / f".{name}.lock"):
        if (path / "coord.npy").is_file():
            return
        split, _, idx = name.partition("_")
        write_scene(synth.generate_scene(domain, split, int(idx), seed), path)


def _register_synth(domain: str, text: str) -> None:
    @DATASETS.register(domain, description=text)
    def _factory(*, seed: int = 0, root: str | None = None, **_ignored) -> SynthDataset:
        return SynthDataset(domain, seed, root)


_register_synth("synth-scannet", "synthetic ScanNet-like domain: small homes, no ceiling, noisy RGB-D scans")
_register_synth("synth-s3dis", "synthetic S3DIS-like domain: large offices, ceilings, dense clean scans")
_register_synth("synth-matterport", "synthetic Matterport3D-like domain: varied home rooms, rich palettes")
