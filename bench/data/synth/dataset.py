"""The synthetic domains as datasets: scenes generated on first use into the cache, then read from disk.

Registered at the foot of this module, one entry per domain of ``DOMAINS``. Cached scenes live in
``<cache>/scenes/<domain>-v<GENERATOR_VERSION>-s<seed>/`` in the one scene layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bench.cache import cache_dir, file_lock
from bench.data.classes import NUM_CLASSES
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene, read_scene, write_scene
from bench.data.synth.domains import DOMAINS
from bench.data.synth.generate import GENERATOR_VERSION, SPLIT_SIZES, generate_scene
from bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthDatasetConfig:
    """Options of a synthetic domain."""

    seed: int = 0  # world seed: another seed gives other scenes of the same domain
    root: str | None = None  # where the scenes are cached (default: the cache folder)


class SynthDataset(Dataset):
    """A synthetic domain: scenes generated on first use into the cache, then read from disk."""

    def __init__(self, domain: str, seed: int = 0, root: str | Path | None = None):
        self.domain = DOMAINS[domain]
        self.name, self.seed, self.classes = domain, seed, self.domain.classes
        self.root = Path(root) if root else cache_dir() / "scenes" / f"{domain}-v{GENERATOR_VERSION}-s{seed}"

    def scene_names(self, split: str, count: int | None = None) -> list[str]:
        self._check_split(split)
        n = 8 if count is None else count
        if n > SPLIT_SIZES[split]:
            raise BenchError(f"{self.name}: at most {SPLIT_SIZES[split]} {split} scenes, asked {n}")
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
        return {"dataset": self.name, "seed": self.seed, "generator": GENERATOR_VERSION}


def _generate_in_worker(args) -> None:
    import torch

    torch.set_num_threads(1)
    _generate_one(args)


def _generate_one(args) -> None:
    domain, seed, root, name = args
    path = Path(root) / name
    with file_lock(Path(root) / f".{name}.lock"):
        if (path / "coord.npy").is_file():
            return
        split, _, idx = name.partition("_")
        write_scene(generate_scene(domain, split, int(idx), seed), path)


def _register(domain: str, text: str) -> None:
    @DATASETS.register(domain, description=text, config=SynthDatasetConfig)
    def _factory(*, cfg: SynthDatasetConfig) -> SynthDataset:
        return SynthDataset(domain, cfg.seed, cfg.root)


_register("synth-scannet", "synthetic ScanNet-like domain: small homes, no ceiling, noisy RGB-D scans")
_register("synth-s3dis", "synthetic S3DIS-like domain: large offices, ceilings, dense clean scans")
_register("synth-matterport", "synthetic Matterport3D-like domain: varied home rooms, rich palettes")
