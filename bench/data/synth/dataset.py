"""The synthetic domains as datasets: scenes generated on first use into the cache, then read from disk.

Registered at the foot of this module, one entry per domain of ``DOMAINS``. Every entry takes the
options ``seed``, ``root`` and ``domain`` (parameter overrides, e.g. ``{"sensor.noise" = 0.02}``).
Cached scenes live in ``<cache>/scenes/<domain>-v<WORLD_VERSION>-s<seed>-<parameter key>/`` in the one
scene layout, so scenes of other parameters or of an older world are never mixed in. Every read
verifies the scene folder's checksum file (``bench.data.scene.verify_checksums``); a scene that fails
(a file truncated, altered, added or removed, or a folder written before scenes carried checksums) is
regenerated, with a warning naming the file, under the scene's lock so that concurrent readers
regenerate it once.

Inline domains (a grid's ``[domains.NAME]`` table: ``base`` plus overrides) are registered by
``register_inline_domain``; the name and base are also put into the environment variable
``TTT_BENCH_DOMAINS`` so that process-pool workers (which inherit the environment) know the name, and
the overrides travel in the cell's ``data_options`` (option ``domain``), so a worker rebuilds the very
same domain.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cache import cache_dir, file_lock
from bench.data.classes import NUM_CLASSES
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene, read_scene, verify_checksums, write_scene
from bench.data.synth.domains import DESCRIPTIONS, DOMAINS, WORLD_VERSION, Domain, domain_from_spec, with_overrides
from bench.data.synth.generate import SPLIT_SIZES, generate_scene
from bench.errors import BenchError

log = logging.getLogger(__name__)
INLINE_VAR = "TTT_BENCH_DOMAINS"


@dataclass(frozen=True)
class SynthDatasetConfig:
    """Options of a synthetic domain."""

    seed: int = 0  # world seed: another seed gives other scenes of the same domain
    root: str | None = None  # where the scenes are cached (default: the cache folder)
    domain: dict = field(default_factory=dict)  # parameter overrides, dotted keys (see bench.data.synth.domains)


class SynthDataset(Dataset):
    """A synthetic domain: scenes generated on first use into the cache, then read from disk."""

    def __init__(self, domain: str | Domain, seed: int = 0, root: str | Path | None = None):
        self.domain = DOMAINS[domain] if isinstance(domain, str) else domain
        self.name, self.seed, self.classes = self.domain.name, seed, self.domain.classes
        folder = f"{self.name}-v{WORLD_VERSION}-s{seed}-{self.domain.key[:10]}"
        self.root = Path(root) if root else cache_dir() / "scenes" / folder

    def scene_names(self, split: str, count: int | None = None) -> list[str]:
        self._check_split(split)
        n = 8 if count is None else count
        if n > SPLIT_SIZES[split]:
            raise BenchError(f"{self.name}: at most {SPLIT_SIZES[split]} {split} scenes, asked {n}")
        return [f"{split}_{i:04d}" for i in range(n)]

    def path(self, name: str) -> Path:
        return self.root / name

    def ensure(self, names: list[str], workers: int = 1) -> None:
        """Generate the scenes of ``names`` that are not on disk yet or fail their checksums (in parallel
        if workers > 1)."""
        missing = []
        for n in names:
            if not self.path(n).exists():
                missing.append(n)
            elif (problem := verify_checksums(self.path(n))) is not None:
                log.warning("%s: %s; regenerating the scene", self.name, problem)
                missing.append(n)
        if not missing:
            return
        log.info("%s: generating %d scenes into %s", self.name, len(missing), self.root)
        jobs = [(self.domain, self.seed, str(self.root), n) for n in missing]
        if workers > 1 and len(missing) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as ex:
                list(ex.map(_generate_in_worker, jobs))
        else:
            for job in jobs:
                _generate_one(job)

    def load(self, name: str, with_views: bool = True) -> Scene:
        self.ensure([name])
        scene = read_scene(self.path(name), self.name, "segment.npy", None, NUM_CLASSES, with_views)
        return scene

    def fingerprint(self):
        return {"dataset": self.name, "seed": self.seed, "generator": WORLD_VERSION, "domain": self.domain.key}


def _generate_in_worker(args) -> None:
    import torch

    torch.set_num_threads(1)
    _generate_one(args)


def _generate_one(args) -> None:
    domain, seed, root, name = args
    path = Path(root) / name
    with file_lock(Path(root) / f".{name}.lock"):
        if verify_checksums(path) is None:  # made (or repaired) by another process meanwhile
            return
        split, _, idx = name.partition("_")
        write_scene(generate_scene(domain, split, int(idx), seed), path)


def _register(name: str, base: str, text: str) -> None:
    @DATASETS.register(name, description=text, config=SynthDatasetConfig, synth_base=base)
    def _factory(*, cfg: SynthDatasetConfig) -> SynthDataset:
        dom = DOMAINS[base]
        if cfg.domain or name != base:
            dom = with_overrides(dom, cfg.domain, name)
        return SynthDataset(dom, cfg.seed, cfg.root)


def register_inline_domain(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Register a grid's inline domain ``[domains.NAME]`` (``base`` + overrides) as a dataset.

    Validates the parameters (unknown ones raise a BenchError listing the valid ones) and returns
    the dataset options that carry them (``{"domain": overrides}``), which the grid puts into its
    ``[data_options.NAME]`` so that every cell, in any worker, rebuilds the same domain.
    """
    if not isinstance(name, str) or not name or any(ch in name for ch in ":@/ "):
        raise BenchError(f"domain name {name!r} must be a non-empty name without ':', '@', '/' or spaces")
    if name in DOMAINS:
        raise BenchError(f"[domains.{name}]: '{name}' is a built-in domain; give the new domain another name")
    dom = domain_from_spec(spec, name)  # validates
    base = spec["base"]
    overrides = {k: v for k, v in spec.items() if k != "base"}
    if name in DATASETS:
        if DATASETS.get(name).extra.get("synth_base") != base:
            raise BenchError(f"[domains.{name}]: '{name}' is already a registered dataset; pick another name")
    else:
        _register(name, base, f"inline synthetic domain based on {base}")
    known = json.loads(os.environ.get(INLINE_VAR, "{}") or "{}")
    known[name] = base
    os.environ[INLINE_VAR] = json.dumps(known, sort_keys=True)
    log.debug("inline domain %s (key %s)", name, dom.key)
    return {"domain": overrides}


def _register_from_env() -> None:
    """Inline domains named by a parent process (``TTT_BENCH_DOMAINS``: name -> base)."""
    try:
        known = json.loads(os.environ.get(INLINE_VAR, "{}") or "{}")
    except json.JSONDecodeError as e:
        raise BenchError(f"${INLINE_VAR} is not valid JSON ({e}); unset it") from e
    for name, base in known.items():
        if name not in DATASETS and base in DOMAINS:
            _register(name, base, f"inline synthetic domain based on {base}")


for _name in DOMAINS:
    _register(_name, _name, DESCRIPTIONS[_name])
_register_from_env()
