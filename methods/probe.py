"""``teacher_probe``: what the 2D teacher alone knows about the target scenes. A linear head on the lifted
2D teacher features, trained on labelled source scenes, predicts the target's points from the teacher's
features alone (a linear probe, as the DINO-enhanced segmentors of Pointcept measure a 2D model's 3D
content; no 3D network is involved). It bounds what TTT-KD can take from the teacher through its
distillation: a class the probe cannot tell apart is not in the teacher's features.

``prepare`` (once, before the stream) gets ``needs.source_scenes`` = 16 clean source training scenes with
their point labels and lifted teacher features (the first 16 scenes of the source's training split, which
the source models were trained on too). Their points seen by a view with a label are the training
set (at most ``max_points`` of them, drawn with the first scene's generator). The features are
standardised with the training set's mean and standard deviation, and a linear layer (features ->
classes, initialised from the same generator) is fitted by ``epochs`` full-batch Adam steps at ``lr``
on the cross-entropy: multinomial logistic regression. The adapted model is never touched (no parameter
of it is adapted; ``adapt`` takes no step), so the row's cost is the teacher features (``teacher_s``,
shared with every teacher row through the feature cache) and the fit (``prepare_s``).

Prediction on a target scene: the head's logits on every point seen by a view. A point seen by no view
has no teacher feature: it takes the logits of the nearest seen point in 3D (so the row stays
teacher-only, with the scene's geometry only to carry the teacher's answer over; the share of seen points
is ``scene_stats()['seen']``, a ``stat_seen`` column). A scene with no seen point at all gets the source
class prior (log frequency of each class among the training points) on every point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from bench.errors import BenchError
from bench.params import AT_LEAST_0, AT_LEAST_1, Check
from methods.base import Method, MethodConfig, Needs, SceneInput
from methods.registry import METHODS


@dataclass
class TeacherProbeConfig(MethodConfig):
    TEST_PARAMS: ClassVar[dict[str, object]] = {"epochs": 20}  # the fit's code path at a fifteenth of its cost
    CHECKS: ClassVar[dict[str, Check]] = {"epochs": AT_LEAST_1, "max_points": AT_LEAST_1, "weight_decay": AT_LEAST_0}
    lr: float = 1e-2  # Adam, for fitting the head on the source (nothing adapts at test time)
    epochs: int = 300  # full-batch steps of the fit
    max_points: int = 200_000  # seen, labelled source points the head is fitted on
    weight_decay: float = 0.0


@METHODS.register("teacher_probe", config=TeacherProbeConfig)
class TeacherProbe(Method):
    """a linear head on the lifted 2D teacher features, fitted on the source; no 3D network, no adaptation"""

    needs = Needs(teacher=True, source_scenes=16)

    def __init__(self, model, cfg: TeacherProbeConfig):
        super().__init__(model, cfg)
        self.head: torch.nn.Linear | None = None
        self.mean = self.std = self.prior = None
        self._stats: dict[str, float] = {}

    def prepare(self, source: list[SceneInput]) -> None:
        feats, labels = [], []
        for inp in source:
            if inp.label is None or inp.teacher_feat is None or inp.teacher_mask is None:
                raise BenchError("teacher_probe: prepare() needs labelled source scenes with lifted teacher features "
                                 "(SceneInput.label, teacher_feat, teacher_mask); the harness passes them when "
                                 "needs.source_scenes > 0 and needs.teacher is set")
            keep = inp.teacher_mask & (inp.label >= 0)
            feats.append(inp.teacher_feat[keep])
            labels.append(inp.label[keep])
        x, y = torch.cat(feats), torch.cat(labels)
        if len(y) == 0:
            raise BenchError(f"teacher_probe: the {len(source)} source scenes have no labelled point seen by a view; "
                             "check the source dataset's labels and views (lift settings: views, lift_tol)")
        g = source[0].generator
        dtype = source[0].batch.feat.dtype
        if len(y) > self.cfg.max_points:
            pick = torch.randperm(len(y), generator=g)[:self.cfg.max_points].to(y.device)
            x, y = x[pick], y[pick]
        x = x.to(dtype)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - self.mean) / self.std
        c = self.model.spec.num_classes
        counts = torch.bincount(y, minlength=c).to(dtype)
        self.prior = torch.log((counts + 1) / (counts.sum() + c))
        head = torch.nn.Linear(x.shape[1], c).to(device=x.device, dtype=dtype)
        with torch.no_grad():
            bound = 1 / x.shape[1] ** 0.5
            head.weight.copy_((torch.rand(head.weight.shape, generator=g, dtype=dtype) * 2 - 1) * bound)
            head.bias.copy_((torch.rand(head.bias.shape, generator=g, dtype=dtype) * 2 - 1) * bound)
        opt = torch.optim.Adam(head.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        with torch.enable_grad():
            for _ in range(self.cfg.epochs):
                opt.zero_grad()
                F.cross_entropy(head(x), y).backward()
                opt.step()
        self.head = head.requires_grad_(False)

    def adapt(self, inp):
        self.last_output = None
        return 0

    @torch.no_grad()
    def predict(self, inp):
        if self.head is None:
            raise BenchError("teacher_probe: the head is fitted in prepare() on labelled source scenes; call it before "
                             "the stream (the harness does when needs.source_scenes > 0)")
        mask = inp.teacher_mask
        n = inp.batch.coord.shape[0]
        self._stats = {"seen": float(mask.sum()) / n}
        if not bool(mask.any()):
            return self.prior.to(inp.batch.feat.device).expand(n, -1).clone()
        feat = (inp.teacher_feat[mask].to(self.mean.dtype) - self.mean) / self.std
        seen = self.head(feat)
        if bool(mask.all()):
            return seen
        out = torch.empty(n, seen.shape[1], dtype=seen.dtype, device=seen.device)
        out[mask] = seen
        coord = inp.batch.coord.detach().cpu().double().numpy()
        m = mask.cpu().numpy()
        _, nearest = cKDTree(coord[m]).query(coord[~m], k=1)
        out[~mask] = seen[torch.from_numpy(nearest).to(seen.device)]
        return out

    def scene_stats(self) -> dict[str, float]:
        """Share of the scene's points seen by a view (the rest take their nearest seen point's prediction)."""
        return dict(self._stats)
