"""Test-time augmentations of a point batch (for DUA and CoTTA): rotation about z, scale, jitter,
colour jitter. Point order is kept, so predictions of augmented copies can be averaged per point."""

from __future__ import annotations

import math

import torch

from backbones.batch import PointBatch


def augment_batch(batch: PointBatch, features: tuple[str, ...], g: torch.Generator, strength: float = 1.0):
    r = lambda lo, hi, *s: lo + (hi - lo) * torch.rand(*s, generator=g)  # noqa: E731
    a = float(r(-math.pi, math.pi, 1)) * strength
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    s = float(r(1 - 0.1 * strength, 1 + 0.1 * strength, 1))
    centre = batch.coord.mean(0)
    coord = (batch.coord - centre) @ rot.T.to(batch.coord) * s + centre
    coord = coord + torch.randn(coord.shape, generator=g).to(coord) * 0.005 * strength
    feat = batch.feat.clone()
    off = 0
    for f in features:
        if f == "color":
            c = (feat[:, off:off + 3] + 1) / 2
            c = c * r(1 - 0.2 * strength, 1 + 0.2 * strength, 3).to(c) + r(-0.05, 0.05, 3).to(c) * strength
            feat[:, off:off + 3] = c.clamp(0, 1) * 2 - 1
            off += 3
        elif f == "normal":
            feat[:, off:off + 3] = feat[:, off:off + 3] @ rot.T.to(feat)
            off += 3
        else:
            off += 1
    return PointBatch(coord, feat, batch.batch, batch.num_scenes)
