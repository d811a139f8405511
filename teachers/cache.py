"""The teacher-feature cache: each scene's lifted teacher features are computed once, then reused.

Keyed by (teacher, weights hash, dataset fingerprint incl. corruption, scene, view set, view
resolution, occlusion tolerance, lifting code version). Counts hits/misses and teacher seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.cache import atomic_write, cache_dir, stable_hash
from bench.data.scene import Scene
from teachers.base import Teacher

LIFT_VERSION = 1


class FeatureCache:
    def __init__(self, teacher: Teacher, views: int | str = "all", tol: float = 0.1, root: Path | None = None):
        self.teacher, self.views, self.tol = teacher, views, tol
        self.root = Path(root) if root else cache_dir() / "features"
        self.hits = self.misses = 0
        self.seconds = 0.0

    def key(self, fingerprint: dict, scene: Scene) -> str:
        res = list(scene.views[0].image.shape[:2]) if scene.views else None
        return stable_hash({**self.teacher.cache_key(), "data": fingerprint, "scene": scene.name,
                            "views": self.views, "n_views": len(scene.views), "res": res, "tol": self.tol,
                            "lift": LIFT_VERSION})

    def get(self, fingerprint: dict, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / self.teacher.name / f"{self.key(fingerprint, scene)}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    feat, mask = z["feat"].astype(np.float32), z["mask"]
                if feat.shape[0] == scene.num_points:
                    self.hits += 1
                    return feat, mask
            except (OSError, ValueError, KeyError):
                pass  # unreadable entry: recompute and overwrite
        t0 = time.perf_counter()
        feat, mask = self.teacher.point_features(scene, self.views, self.tol)
        self.seconds += time.perf_counter() - t0
        self.misses += 1
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, feat=feat.astype(np.float16), mask=mask)

        atomic_write(path, write)
        return feat.astype(np.float16).astype(np.float32), mask
