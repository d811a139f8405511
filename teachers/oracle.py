"""``oracle``: teacher features made from the true labels, an upper-bound control.

Each class gets a fixed random unit embedding (seeded); a point's feature is its class embedding plus
Gaussian noise of std ``noise``. Only labelled points that some view sees are covered, as for an image
teacher. Every table labels its rows "oracle" so it is never mistaken for a real teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.cache import stable_hash
from bench.data.classes import NUM_CLASSES
from bench.data.scene import Scene
from teachers.base import Teacher
from teachers.lift import project, select_views
from teachers.registry import TEACHERS


@dataclass
class OracleConfig:
    dim: int = 32
    noise: float = 0.3
    seed: int = 0


class Oracle(Teacher):
    def __init__(self, cfg: OracleConfig):
        self.cfg, self.name, self.dim = cfg, "oracle", cfg.dim
        self.weights_id = f"oracle-noise{cfg.noise}-seed{cfg.seed}"
        e = np.random.default_rng(cfg.seed).normal(size=(NUM_CLASSES, cfg.dim))
        self.embedding = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    def point_features(self, scene: Scene, views: int | str = "all", tol: float = 0.1):
        seen = np.zeros(scene.num_points, dtype=bool)
        for i in select_views(scene.views, views):
            seen |= project(scene.coord, scene.views[i], tol)[2]
        if not scene.views:  # a dataset without images: every labelled point counts as seen
            seen[:] = True
        mask = seen & (scene.label >= 0)
        rng = np.random.default_rng(int(stable_hash([self.cfg.seed, scene.dataset, scene.name], 8), 16))
        feat = np.zeros((scene.num_points, self.dim), dtype=np.float32)
        feat[mask] = self.embedding[scene.label[mask]] + rng.normal(0, self.cfg.noise, (int(mask.sum()), self.dim))
        return feat, mask


@TEACHERS.register("oracle", config=OracleConfig)
def build_oracle(*, cfg: OracleConfig, device: str = "cpu") -> Oracle:  # noqa: ARG001  (features are made on CPU)
    """features from the true labels (class embedding + noise): an upper-bound control, not a real teacher"""
    return Oracle(cfg)
