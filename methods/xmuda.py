"""``xmuda``: cross-modal consistency between the 2D and the 3D predictions on the points seen by a view
(Jaritz et al., "xMUDA: Cross-Modal Unsupervised Domain Adaptation for 3D Semantic Segmentation",
CVPR 2020; official code valeoai/xmuda), as a test-time method, optionally with xMUDA's pseudo-labels.

xMUDA trains a 2D and a 3D stream; on target data each stream's prediction is pulled towards the
other's by a KL divergence on the points that project into the image (the other side detached),
``KL(P_other || Q_own) = sum_c P_other log(P_other / Q_own)``, averaged over the seen points
(``F.kl_div(log_softmax(own), softmax(other).detach(), reduction="none").sum(1).mean()`` in the
official ``train_xmuda.py``). xMUDA-PL adds cross-entropy on each stream's own pseudo-labels, refined
per class: a point whose pseudo-label probability is below min(median of that class's
probabilities, 0.9) is ignored (official ``refine_pseudo_labels``).

3D/2D adaptation stated:
- The 2D stream is the frozen 2D teacher plus the trainable 2D label head of a ``joint-kd2d`` model
  (``heads["seg2d"]`` on the lifted teacher features); the 3D stream is the 3D model.
- xMUDA uses separate "mimicking" heads for the cross-modal loss; our models have one label head
  per modality, so the KL acts on the main heads (as the test-time xMUDA baseline of MM-TTA does).
- Test time instead of training time: no source loss; per scene ``steps`` Adam steps on
  ``xm_weight * (KL(P3D || Q2D) + KL(P2D || Q3D)) + pl_weight * (CE2D + CE3D)``, adapting the BN
  affine parameters of the 3D backbone and (``adapt2d``) of the 2D head, with BN normalising by the
  scene's statistics (``bn = "test"``), online over the stream by default (``episodic = false``).
- Pseudo-labels (``pl_weight > 0``; off by default, the "optionally" of the issue) come from the same
  forward, detached (xMUDA computes them offline with the source model; per scene here).
- A scene where no point is seen by a view gives no cross-modal signal: with ``pl_weight = 0`` no
  step is taken (step count 0).

Outputs: ``predict`` returns the 3D logits (the method's ``miou`` is its 3D mIoU, comparable with every
3D-only row) and sets ``last_output_2d``: (N, C) 2D logits on the points seen by a view, NaN rows on
unseen points (the cell reports 2D mIoU on the seen points and fuses by averaging the two softmaxes
there, as xMUDA's "2D+3D" ensemble does; unseen points keep the 3D prediction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.params import AT_LEAST_0, Check, one_of
from methods.base import Method, MethodConfig, Needs, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class XMUDAConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 3e-4, 1e-3), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "xm_weight": AT_LEAST_0, "pl_weight": AT_LEAST_0, "bn": one_of("test", "source"),
    }
    episodic: bool = False  # online over the stream, as the test-time xMUDA baseline
    steps: int = 1
    lr: float = 1e-3
    xm_weight: float = 1.0  # weight of the two cross-modal KL terms
    pl_weight: float = 0.0  # weight of the per-modality pseudo-label cross-entropy (0 = off)
    adapt2d: bool = True  # also adapt the 2D head's BN affine parameters
    bn: str = "test"  # BN statistics while adapting and predicting: test (the scene's) or source


def logits_2d(model, inp, n_classes: int | None = None) -> torch.Tensor:
    """(N, C) 2D logits: the 2D head on the lifted teacher features of the seen points, NaN elsewhere."""
    mask = inp.teacher_mask
    seen = model.forward2d(inp.teacher_feat[mask].to(inp.batch.feat.dtype))
    out = torch.full((mask.shape[0], seen.shape[1]), float("nan"), dtype=seen.dtype, device=seen.device)
    out[mask] = seen
    return out


def refine_pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    """xMUDA's per-class refinement: argmax labels, -1 where the probability is below the class's
    min(median, 0.9)."""
    prob, label = logits.detach().softmax(1).max(1)
    out = label.clone()
    for c in label.unique():
        idx = label == c
        thresh = min(float(prob[idx].median()), 0.9)
        out[idx & (prob < thresh)] = -1
    return out


def head2d_params(model) -> list[torch.nn.Parameter]:
    return bn_affine_params(model.heads["seg2d"]) if "seg2d" in model.heads else []


@METHODS.register("xmuda", config=XMUDAConfig)
class XMUDA(Method):
    """xMUDA at test time: 2D<->3D KL consistency on seen points (+ optional pseudo-labels), BN affine"""

    needs = Needs(recipe="joint-kd2d", teacher=True)
    last_output_2d: torch.Tensor | None = None

    def __init__(self, model, cfg: XMUDAConfig):
        self.bn_mode = cfg.bn
        super().__init__(model, cfg)

    def adapt_params(self):
        return bn_affine_params(self.model.backbone) + (head2d_params(self.model) if self.cfg.adapt2d else [])

    def adapt(self, inp):
        self.last_output = self.last_output_2d = None
        mask = inp.teacher_mask
        seen = bool(mask.any())
        if not seen and self.cfg.pl_weight == 0:
            return 0
        set_bn_mode(self.model, self.bn_mode)
        for _ in range(self.cfg.steps):
            l3 = self.model(inp.batch)["seg"]
            self.last_output = l3.detach()
            loss = l3.sum() * 0.0
            if seen:
                l2 = self.model.forward2d(inp.teacher_feat[mask].to(inp.batch.feat.dtype))
                full = torch.full_like(l3, float("nan"))
                full[mask] = l2.detach()
                self.last_output_2d = full
                l3s = l3[mask]
                xm2 = F.kl_div(l2.log_softmax(1), l3s.detach().softmax(1), reduction="none").sum(1).mean()
                xm3 = F.kl_div(l3s.log_softmax(1), l2.detach().softmax(1), reduction="none").sum(1).mean()
                loss = loss + self.cfg.xm_weight * (xm2 + xm3)
                if self.cfg.pl_weight > 0:
                    loss = loss + self.cfg.pl_weight * F.cross_entropy(l2, refine_pseudo_labels(l2), ignore_index=-1)
            if self.cfg.pl_weight > 0:
                loss = loss + self.cfg.pl_weight * F.cross_entropy(l3, refine_pseudo_labels(l3), ignore_index=-1)
            self.step(loss)
        return self.cfg.steps

    @torch.no_grad()
    def predict(self, inp):
        set_bn_mode(self.model, self.bn_mode)
        if inp.teacher_mask is not None and bool(inp.teacher_mask.any()):
            self.last_output_2d = logits_2d(self.model, inp)
        return self.model(inp.batch)["seg"]
