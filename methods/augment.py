"""Test-time augmentations of a point batch (DUA, CoTTA, MEMO, RoTTA, ROID, AdaContrast): rotation about z,
scale, jitter, colour jitter. Point order is kept, so predictions of augmented copies can be averaged per point."""

from __future__ import annotations

import math

import torch

from backbones.batch import PointBatch, feature_slices


def augment_batch(batch: PointBatch, features: tuple[str, ...], g: torch.Generator, strength: float = 1.0):
    r = lambda lo, hi, *s: lo + (hi - lo) * torch.rand(*s, generator=g)  # noqa: E731
    a = float(r(-math.pi, math.pi, 1)) * strength
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    s = float(r(1 - 0.1 * strength, 1 + 0.1 * strength, 1))
    centre = batch.coord.mean(0)
    coord = (batch.coord - centre) @ rot.T.to(batch.coord) * s + centre
    coord = coord + torch.randn(coord.shape, generator=g).to(coord) * 0.005 * strength
    feat = batch.feat.clone()
    sl = feature_slices(features)
    if "color" in sl:
        c = (feat[:, sl["color"]] + 1) / 2
        c = c * r(1 - 0.2 * strength, 1 + 0.2 * strength, 3).to(c) + r(-0.05, 0.05, 3).to(c) * strength
        feat[:, sl["color"]] = c.clamp(0, 1) * 2 - 1
    if "normal" in sl:
        feat[:, sl["normal"]] = feat[:, sl["normal"]] @ rot.T.to(feat)
    return PointBatch(coord, feat, batch.batch, batch.num_scenes)
