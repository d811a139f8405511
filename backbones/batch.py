"""Turning scenes into the tensors a backbone eats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.data.scene import Scene
from bench.errors import BenchError

FEATURES = {"color": 3, "normal": 3, "height": 1}


@dataclass
class PointBatch:
    """Points of one or more scenes: ``batch`` holds each point's scene index."""

    coord: torch.Tensor  # (N,3) float32
    feat: torch.Tensor  # (N,C) float32
    batch: torch.Tensor  # (N,) int64
    num_scenes: int

    def to(self, device) -> PointBatch:
        return PointBatch(self.coord.to(device), self.feat.to(device), self.batch.to(device), self.num_scenes)

    def with_feat(self, feat: torch.Tensor) -> PointBatch:
        return PointBatch(self.coord, feat, self.batch, self.num_scenes)


def in_channels(features: tuple[str, ...]) -> int:
    return sum(FEATURES[f] for f in features)


def feature_slices(features: tuple[str, ...]) -> dict[str, slice]:
    """Where each input feature sits in the feature vector, e.g. {'color': 0:3, 'normal': 3:6}."""
    out, off = {}, 0
    for f in features:
        out[f] = slice(off, off + FEATURES[f])
        off += FEATURES[f]
    return out


def scene_features(scene: Scene, features: tuple[str, ...]) -> np.ndarray:
    cols = []
    for f in features:
        if f == "color":
            cols.append(scene.color * 2.0 - 1.0)
        elif f == "normal":
            if scene.normal is None:
                raise BenchError(f"scene {scene.dataset}/{scene.name} has no normals but the model's input "
                                 "features include 'normal'; add normal.npy or set features = ['color']")
            cols.append(scene.normal)
        elif f == "height":
            cols.append((scene.coord[:, 2:3] - scene.coord[:, 2].min()) / 3.0)
        else:
            raise BenchError(f"unknown input feature '{f}'; valid: {', '.join(FEATURES)}")
    return np.concatenate(cols, 1).astype(np.float32)


def make_batch(scenes: list[Scene], features: tuple[str, ...], coords: list[np.ndarray] | None = None,
               feats: list[np.ndarray] | None = None) -> PointBatch:
    """Concatenate scenes (optionally with replaced coordinates/features, e.g. augmented ones)."""
    coords = coords or [s.coord for s in scenes]
    feats = feats or [scene_features(s, features) for s in scenes]
    batch = np.concatenate([np.full(len(c), i, dtype=np.int64) for i, c in enumerate(coords)])
    return PointBatch(torch.from_numpy(np.concatenate(coords).astype(np.float32)),
                      torch.from_numpy(np.concatenate(feats).astype(np.float32)),
                      torch.from_numpy(batch), len(scenes))
