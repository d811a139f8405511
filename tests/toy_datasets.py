"""Tiny registered datasets for the stream, scenario and open-set tests: 300 points of floor and wall
planes plus one object class per scene (which one is a function of the scene's name), colours shifted
per dataset, no views. One class serves every test module that registers such datasets."""

from __future__ import annotations

import zlib

import numpy as np

from bench.data.classes import CLASS_ID
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene


class PlaneDataset(Dataset):
    """Floor, wall and one of ``objects`` per scene; colours shifted by ``shift``."""

    has_views = False

    def __init__(self, name: str, shift: float, objects: tuple[str, ...]):
        self.name, self.shift, self.objects = name, shift, objects
        self.classes = (CLASS_ID["wall"], CLASS_ID["floor"]) + tuple(sorted(CLASS_ID[o] for o in objects))

    def scene_names(self, split, count=None):
        return [f"{split}_{i}" for i in range(count or 2)]

    def load(self, name, with_views=True):
        h = zlib.crc32(f"{self.name}/{name}".encode())
        rng = np.random.default_rng(h)
        n = 300
        coord = rng.uniform(0, 2, (n, 3)).astype(np.float32)
        obj = CLASS_ID[self.objects[h % len(self.objects)]]
        label = np.where(coord[:, 2] < 0.4, CLASS_ID["floor"], np.where(coord[:, 0] < 0.5, CLASS_ID["wall"], obj))
        base = np.stack([0.15 * (label % 4), 0.2 * (label % 3), 0.1 * (label % 5)], 1) + 0.2
        color = np.clip(base + self.shift + rng.normal(0, 0.03, (n, 3)), 0, 1).astype(np.float32)
        normal = np.tile([0, 0, 1], (n, 1)).astype(np.float32)
        return Scene(name, self.name, coord, color, label.astype(np.int64), normal)

    def fingerprint(self):
        return {"dataset": self.name}


def register(shifts: dict[str, float], objects: tuple[str, ...], description: str) -> None:
    """Register one PlaneDataset per name (once, however often a test module is imported)."""
    for name, shift in shifts.items():
        if name not in DATASETS:
            DATASETS.register(name, description=description)(
                lambda _n=name, _s=shift, **kw: PlaneDataset(_n, _s, objects))
