"""``mmtta``: multi-modal test-time adaptation with slow/fast BatchNorm pseudo-labels per modality and the
more consistent modality selected per point (Shin et al., "MM-TTA: Multi-Modal Test-Time Adaptation for
3D Semantic Segmentation", CVPR 2022; project page www.nec-labs.com/~mas/MM-TTA).

No official code was found (the project page lists "Code & data (coming soon)"), so this follows the paper,
and of two readings of it, ours is the one its text and project page state: Intra-PG "updates two
models (batch norm statistics) in different paces, i.e. slow and fast updating schemes with a momentum"
(project page), so the slow and fast predictions here share their weights and differ only in the BN
statistics they normalise with (fast: the scene's; slow: stored statistics that follow the fast ones with
``momentum``). The third-party implementation in Latte (AronCao49/Latte, ``latte/tta/tools/mmtta.py``, the
MM-TTA baseline of Cao et al., ECCV 2024) reads it differently: its slow model is a mean teacher whose norm
layers' affine parameters are an exponential moving average (0.99) of the student's, both models normalise
with batch statistics, the two predictions are averaged as logits, the consistency is the mean of the
inverse KL divergences in both directions, the modalities are always mixed by the normalised consistencies
(soft selection), points whose larger consistency is below 0.3 are left out, and it reports the slow
model's prediction before the update. We keep the BN-statistics reading because it is the one the authors
describe, it needs no second copy of the weights, and Latte's parameter EMA is the mean-teacher scheme of
other methods (CoTTA here), not what the paper names; the other choices below (probabilities averaged, the
KL(fast || slow), hard selection by default with soft as an option, no consistency threshold, the
prediction with the fast statistics) are our reading of the paper's equations, not checked against code.

Per scene and step, for each modality m (2D branch: frozen teacher + the ``joint-kd2d`` 2D head on the
lifted features of the seen points; 3D: the 3D model):
1. Intra-modal pseudo-labels (Intra-PG): a "slow" prediction normalised with the stored BN statistics
   and a "fast" one normalised with the scene's statistics; p_m = (softmax(slow) + softmax(fast)) / 2.
   The stored statistics follow the fast ones with ``momentum`` (they are updated by the fast
   forward, after the slow forward has been taken), so the slow model is a momentum average of the
   fast statistics, starting at the source statistics.
2. Inter-modal refinement (Inter-PR): consistency c_m = 1 / (KL(softmax(fast) || softmax(slow)) + eps)
   per point; ``select = "hard"``: each seen point takes the argmax of p_m of its more consistent
   modality; ``"soft"``: the argmax of (c_2D p_2D + c_3D p_3D) / (c_2D + c_3D). Points seen by no view
   have the 3D pseudo-label only.
3. Cross-entropy of both fast predictions with the refined pseudo-labels (2D on the seen points, 3D on
   all), one Adam step on the BN affine parameters of the 3D backbone and the 2D head.

3D/2D adaptation stated: the 2D network is frozen except its head, whose BatchNorm layer carries the
2D branch's slow/fast statistics; a "batch" is one scene (its points, or its seen points for 2D).
Online over the stream by default (``episodic = false``), as in the paper. ``predict`` normalises with
the scene's statistics (the fast model), returns the 3D logits and sets ``last_output_2d`` ((N, C) 2D
logits on seen points, NaN rows elsewhere), as ``xmuda`` does. A scene with no seen point adapts the
3D branch alone (pseudo-labels = the 3D intra-modal ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.params import AT_LEAST_0, UNIT, Check, one_of
from methods.base import Method, MethodConfig, Needs, bn_affine_params, set_bn_mode
from methods.registry import METHODS
from methods.xmuda import head2d_params, logits_2d

EPS = 1e-8


@dataclass
class MMTTAConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 3e-4, 1e-3), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {"steps": AT_LEAST_0, "momentum": UNIT, "select": one_of("hard", "soft")}
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3
    momentum: float = 0.1  # how far the slow (stored) BN statistics move towards the fast ones per step
    select: str = "hard"  # hard: the more consistent modality per point; soft: consistency-weighted mix


def consistency(fast: torch.Tensor, slow: torch.Tensor) -> torch.Tensor:
    """Per-point 1 / (KL(softmax(fast) || softmax(slow)) + eps)."""
    kl = (fast.softmax(1) * (fast.log_softmax(1) - slow.log_softmax(1))).sum(1)
    return 1.0 / (kl + EPS)


@METHODS.register("mmtta", config=MMTTAConfig)
class MMTTA(Method):
    """MM-TTA: slow/fast BN pseudo-labels per modality, the more consistent modality per point, BN affine"""

    needs = Needs(recipe="joint-kd2d", teacher=True)
    bn_mode = "test"
    last_output_2d: torch.Tensor | None = None

    def adapt_params(self):
        return bn_affine_params(self.model.backbone) + head2d_params(self.model)

    def _forward(self, inp, mask, seen: bool):
        l3 = self.model(inp.batch)["seg"]
        l2 = self.model.forward2d(inp.teacher_feat[mask].to(inp.batch.feat.dtype)) if seen else None
        return l3, l2

    def pseudo_labels(self, s3, f3, s2, f2, mask) -> torch.Tensor:
        p3 = (s3.softmax(1) + f3.softmax(1)) / 2
        label = p3.argmax(1)
        if s2 is None:
            return label
        p2 = (s2.softmax(1) + f2.softmax(1)) / 2
        c3, c2 = consistency(f3[mask], s3[mask]), consistency(f2, s2)
        if self.cfg.select == "hard":
            seen_label = torch.where(c2 > c3, p2.argmax(1), p3[mask].argmax(1))
        else:
            seen_label = ((c2[:, None] * p2 + c3[:, None] * p3[mask]) / (c2 + c3)[:, None]).argmax(1)
        label[mask] = seen_label
        return label

    def adapt(self, inp):
        self.last_output = self.last_output_2d = None
        mask = inp.teacher_mask
        seen = mask is not None and bool(mask.any())
        for _ in range(self.cfg.steps):
            with torch.no_grad():  # slow: the stored statistics
                set_bn_mode(self.model, "source")
                s3, s2 = self._forward(inp, mask, seen)
            set_bn_mode(self.model, "update", self.cfg.momentum)  # fast: the scene's; stored ones follow
            f3, f2 = self._forward(inp, mask, seen)
            set_bn_mode(self.model, "test")
            self.last_output = f3.detach()
            pl = self.pseudo_labels(s3, f3.detach(), s2, None if f2 is None else f2.detach(), mask)
            loss = F.cross_entropy(f3, pl)
            if seen:
                full = torch.full_like(f3, float("nan"))
                full[mask] = f2.detach()
                self.last_output_2d = full
                loss = loss + F.cross_entropy(f2, pl[mask])
            self.step(loss)
        return self.cfg.steps

    @torch.no_grad()
    def predict(self, inp):
        set_bn_mode(self.model, "test")
        if inp.teacher_mask is not None and bool(inp.teacher_mask.any()):
            self.last_output_2d = logits_2d(self.model, inp)
        return self.model(inp.batch)["seg"]
