"""``dua``: Dynamic Unsupervised Adaptation (Mirza et al., CVPR 2022; official code jmiemirza/DUA,
``methods/dua.py``). No gradient step: only the BatchNorm running statistics move.

As the official loop, online over the stream: for the i-th scene of the stream (i = 1, 2, ...; the
count restarts only at a reset), every BN layer's momentum is 0.1 * 0.94^i + 0.005 (the sum: the
decaying part plus the floor), and one forward in BN-train mode runs on a batch of ``copies``
augmented copies of the scene, so the running statistics move towards that batch's statistics with
that momentum; the prediction then uses the updated running statistics. So early scenes move the
statistics a lot and later ones less and less: DUA accumulates the target's statistics over the
stream.

3D rules and deviations: a sample is a scene; its ``copies`` augmented copies (``augment_batch``:
rotation about z, scale, jitter, colour; the official uses random crop, flip and 90-degree
rotations of an image) go through the network as one batch (one BN update per scene, as the
official 64 copies of one image form one batch). ``copies`` = 8 instead of 64 (our choice): one
copy of a scene already holds ~20k points, so BN's statistics are estimated from >100k points per
update; 64 copies would be a 1.3M-point forward. The official code also evaluates the whole test
set after every sample and keeps the best result (a selection with labels), which a benchmark
cannot do: here every scene is scored once, right after its own update. ``last_output`` is None:
the adapting forward sees augmented copies, not the scene; DUA predicts after its update.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from backbones.batch import PointBatch
from bench.params import AT_LEAST_1, UNIT, Check
from methods.augment import augment_batch
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class DUAConfig(MethodConfig):
    CHECKS: ClassVar[dict[str, Check]] = {"copies": AT_LEAST_1, "momentum": UNIT, "decay": UNIT, "min_momentum": UNIT}
    episodic: bool = False
    copies: int = 8
    momentum: float = 0.1
    decay: float = 0.94
    min_momentum: float = 0.005


def stack_copies(batches: list[PointBatch]) -> PointBatch:
    """Several copies of one scene as one multi-scene batch (copy k is scene k of the batch)."""
    return PointBatch(torch.cat([b.coord for b in batches]), torch.cat([b.feat for b in batches]),
                      torch.cat([torch.full_like(b.batch, k) for k, b in enumerate(batches)]), len(batches))


@METHODS.register("dua", config=DUAConfig)
class DUA(Method):
    """BN statistics from augmented copies of the scene with decaying momentum; no gradient steps"""

    def on_reset(self):
        self.seen = 0

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.on_reset()

    @torch.no_grad()
    def adapt(self, inp):
        self.last_output = None
        self.seen += 1
        mom = self.cfg.momentum * self.cfg.decay ** self.seen + self.cfg.min_momentum
        feats = self.model.spec.features
        copies = stack_copies([augment_batch(inp.batch, feats, inp.generator) for _ in range(self.cfg.copies)])
        set_bn_mode(self.model, "update", momentum=mom)
        self.model(copies)
        set_bn_mode(self.model, "source")
        return 0
