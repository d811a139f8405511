"""The teacher-feature cache: each scene's lifted teacher features are computed once, then reused.

Keyed by (teacher, weights hash, dataset fingerprint incl. corruption, scene, view set, view
resolution, occlusion tolerance, lifting code version). Counts hits/misses and teacher seconds.

Each entry (``.npz``) carries a sha256 of its arrays (``checksum``), verified on every read: an entry
that cannot be read, fails its checksum or does not fit the scene is recomputed and overwritten, with
a warning naming the file. An entry written before entries carried checksums is read as before
(readable and fitting the scene) and its checksum is added then.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile
from pathlib import Path

import numpy as np

from bench.cache import atomic_write, cache_dir, stable_hash
from bench.data.scene import Scene
from teachers.base import Teacher

log = logging.getLogger(__name__)
LIFT_VERSION = 1


def checksum(feat: np.ndarray, mask: np.ndarray) -> str:
    """sha256 of the stored arrays: dtype, shape and bytes of each."""
    h = hashlib.sha256()
    for a in (feat, mask):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _write(path: Path, feat: np.ndarray, mask: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, feat=feat, mask=mask, checksum=np.array(checksum(feat, mask)))

    atomic_write(path, write)


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

    def path(self, fingerprint: dict, scene: Scene) -> Path:
        return self.root / self.teacher.name / f"{self.key(fingerprint, scene)}.npz"

    def _read(self, path: Path, scene: Scene) -> tuple[np.ndarray, np.ndarray] | str:
        """The entry's (features, mask), or why it cannot be used."""
        try:
            with np.load(path, allow_pickle=False) as z:
                feat, mask = z["feat"], z["mask"]
                stored = str(z["checksum"]) if "checksum" in z.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            return f"unreadable ({type(e).__name__}: {e})"
        if feat.ndim != 2 or feat.shape[0] != scene.num_points or mask.shape != (scene.num_points,):
            return f"holds features of shape {feat.shape}, not of this scene's {scene.num_points} points"
        if stored is None:  # written before entries carried checksums: adopt it
            _write(path, feat, mask)
        elif stored != checksum(feat, mask):
            return "its arrays differ from its checksum (damaged or altered)"
        return feat.astype(np.float32), mask

    def get(self, fingerprint: dict, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
        path = self.path(fingerprint, scene)
        if path.is_file():
            got = self._read(path, scene)
            if not isinstance(got, str):
                self.hits += 1
                return got
            log.warning("teacher feature cache entry %s %s; recomputing it", path, got)
        t0 = time.perf_counter()
        feat, mask = self.teacher.point_features(scene, self.views, self.tol)
        self.seconds += time.perf_counter() - t0
        self.misses += 1
        feat16 = feat.astype(np.float16)
        _write(path, feat16, mask)
        return feat16.astype(np.float32), mask
