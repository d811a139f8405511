"""``eata``: Efficient Anti-forgetting Test-time Adaptation (Niu et al., ICML 2022; official code
mr-eggplant/EATA, ``eata.py`` and the Fisher loop of ``main.py``).

Per step, as the official ``forward_and_adapt_eata``: one forward with batch statistics; keep the
points whose entropy is below ``e_margin`` (reliable); of those, keep the ones whose class
distribution has |cosine| < ``d_margin`` with the moving average (0.9) of the kept points' mean
distribution (non-redundant; no such filter before the first average exists); the loss is the mean
of entropy * exp(e_margin - entropy) over the kept points plus the anti-forgetting term
``fisher_alpha`` * sum F (theta - theta_source)^2; a step only if some point was kept. The affine
parameters of every BN layer adapt. ``last_output`` holds the logits of the adapting forward
(computed before the update), which is what the official code returns as its prediction.

Optimizer: SGD with momentum 0.9 at the official learning rate 2.5e-4 (``main.py``:
``torch.optim.SGD(params, 0.00025, momentum=0.9)``, for batches of 64 ImageNet images; here a batch is
one scene and the loss a mean over its kept points, so the gradient has the same scale: a mean).

Filter statistics (``scene_stats()``, recorded per scene by the harness as ``stat_<key>``):
``updated`` 1 if at least one step was taken on the scene, else 0 (its mean over scene rows is the
share of scenes updated); ``reliable`` the share of the scene's points below ``e_margin`` and
``kept`` the share that passed both filters, i.e. the points the update used (each the mean over
the scene's steps); ``redundancy_blocked`` 1 if on some step reliable points existed but the
redundancy filter removed every one of them (the step was skipped because of ``d_margin`` alone).

Fisher (official: diagonal, on ``fisher_size`` = 2000 clean in-distribution samples in batches of
64, each batch's mean cross-entropy against the model's own argmax labels, squared gradients summed
over batches and divided by their number, BN with batch statistics): here computed once in
``prepare`` on ``needs.source_scenes`` clean source training scenes handed over by the harness. A
sample is a point: each source scene gets one forward with its own batch statistics, then
``fisher_size`` points in total (split evenly over the scenes, drawn with each scene's generator)
are taken in batches of ``fisher_batch`` = 64 points, one backward per batch.
Measured size (with Adam at lr 1e-3, the optimizer of this row before it took the official SGD;
source model synth-scannet, Fisher on 4 of its training scenes, 6-scene streams on synth-scannet and
synth-s3dis): alpha * sum F (theta - theta_source)^2 grew from 2e-5 after the first scene to 2e-4
after the sixth (the weighted entropy term is ~0.3), and its gradient from 1.5% to 5% of the entropy
term's gradient. The gradient grows linearly with the drift, so the regulariser balances the entropy
gradient after roughly 20x the drift of six scenes: on short streams EATA is close to ETA, on long
streams (hundreds of scenes) the Fisher term binds. Whole scenes as Fisher batches would give a F
only 1.8x smaller (a scene's points are correlated, so the mean gradient, not the per-batch noise,
dominates F); the 64-point batches keep the official definition.

3D rules (C = 12 classes, not 1000):
- ``e_margin`` = 0.4 ln C, the paper's rule (0.4 ln 1000 on ImageNet).
- ``d_margin`` = 0.05 * sqrt(1000 / C) (= 0.456 for C = 12): the cosine between a one-hot
  distribution and a uniform average is 1/sqrt(C) (0.032 for 1000 classes, where the official 0.05
  sits just above it); with 12 classes that cosine is 0.29, so 0.05 would drop every point. The
  threshold is scaled by the same factor sqrt(1000 / C) to keep its position relative to 1/sqrt(C).
  It still blocks whole scenes: once the moving average of the kept distributions is dominated by a
  few classes, a scene whose reliable points are all of those classes has every |cosine| above
  0.456 and takes no step (``redundancy_blocked``; measured share in the README's EATA section).
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from backbones.losses import entropy
from bench.data.classes import NUM_CLASSES
from bench.errors import BenchError
from bench.params import AT_LEAST_0, AT_LEAST_1, UNIT, Check
from methods.base import Method, MethodConfig, Needs, SceneInput, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class EATAConfig(MethodConfig):
    # an untrained tiny model has no confident point: open the entropy filter (the redundancy filter stays, so
    # the moving average of the kept predictions decides whether the second scene steps)
    TEST_PARAMS: ClassVar[dict[str, object]] = {"e_margin": 10.0}
    # sized for SGD (momentum 0.9), the official optimizer: learning rates up to 1
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-3, 1e-2, 1e-1, 1.0), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "e_margin": AT_LEAST_0, "d_margin": AT_LEAST_0, "ema": UNIT, "fisher_alpha": AT_LEAST_0,
        "fisher_size": AT_LEAST_1, "fisher_batch": AT_LEAST_1,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 2.5e-4  # official (SGD, momentum 0.9)
    optimizer: str = "sgd"  # official
    e_margin: float = 0.4 * math.log(NUM_CLASSES)
    d_margin: float = 0.05 * math.sqrt(1000 / NUM_CLASSES)
    ema: float = 0.9
    fisher_alpha: float = 2000.0
    fisher_size: int = 2000  # points (samples) from the clean source scenes
    fisher_batch: int = 64  # points per Fisher batch (the official test batch size)


@METHODS.register("eata", config=EATAConfig)
class EATA(Method):
    """entropy on reliable, non-redundant points, re-weighted, with a Fisher anti-forgetting term"""

    needs = Needs(source_scenes=4)
    bn_mode = "test"

    def adapt_params(self):
        return bn_affine_params(self.model.backbone)

    def on_reset(self):
        self.prob_ema = None

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.on_reset()
        self.anchor = [p.detach().clone() for p in self.params]
        self.fisher: list[torch.Tensor] | None = None
        self._stats: dict[str, float] = {}

    def scene_stats(self) -> dict[str, float]:
        """The filters on the last scene (see the module docstring): updated, reliable, kept, redundancy_blocked."""
        return dict(self._stats)

    def prepare(self, source: list[SceneInput]) -> None:
        """Diagonal Fisher on clean source scenes (see the module docstring); the weights do not move."""
        if self.cfg.fisher_alpha <= 0:
            return
        if not source:
            raise BenchError("eata: prepare() got no source scenes for its Fisher regulariser; the harness "
                             "must pass needs.source_scenes clean source scenes (or set fisher_alpha = 0)")
        set_bn_mode(self.model, "test")
        fisher = [torch.zeros_like(p) for p in self.params]
        n_batches = 0
        per_scene = [self.cfg.fisher_size // len(source) + (i < self.cfg.fisher_size % len(source))
                     for i in range(len(source))]
        for inp, n in zip(source, per_scene):
            logits = self.model(inp.batch)["seg"]
            labels = logits.argmax(1)
            idx = torch.randperm(logits.shape[0], generator=inp.generator)[:n].to(logits.device)
            chunks = idx.split(self.cfg.fisher_batch)
            for j, chunk in enumerate(chunks):
                loss = F.cross_entropy(logits[chunk], labels[chunk])
                grads = torch.autograd.grad(loss, self.params, retain_graph=j < len(chunks) - 1, allow_unused=True)
                for f, g in zip(fisher, grads):
                    if g is not None:
                        f.add_(g.detach() ** 2)
                n_batches += 1
        self.fisher = [f / max(n_batches, 1) for f in fisher]
        set_bn_mode(self.model, "source")

    def adapt(self, inp):
        if self.fisher is None and self.cfg.fisher_alpha > 0:
            raise BenchError("eata: the Fisher regulariser needs clean source scenes: call prepare() before "
                             "the stream (the harness does when needs.source_scenes > 0), or set fisher_alpha = 0")
        steps = 0
        reliable, kept, blocked = [], [], False
        self.last_output = None
        for _ in range(self.cfg.steps):
            set_bn_mode(self.model, "test")
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            ent = entropy(logits)
            prob = logits.softmax(1)
            keep = ent < self.cfg.e_margin
            n_reliable = int(keep.sum())
            if self.prob_ema is not None:
                keep &= F.cosine_similarity(self.prob_ema[None], prob, dim=1).abs() < self.cfg.d_margin
            n = logits.shape[0]
            reliable.append(n_reliable / n)
            kept.append(int(keep.sum()) / n)
            if not keep.any():
                blocked |= n_reliable > 0
                continue
            mean_prob = prob[keep].mean(0).detach()
            self.prob_ema = mean_prob if self.prob_ema is None else (
                self.cfg.ema * self.prob_ema + (1 - self.cfg.ema) * mean_prob)
            loss = (ent[keep] * torch.exp(self.cfg.e_margin - ent[keep].detach())).mean()
            if self.fisher is not None and self.cfg.fisher_alpha > 0:
                loss = loss + self.cfg.fisher_alpha * sum(
                    (f * (p - a) ** 2).sum() for f, p, a in zip(self.fisher, self.params, self.anchor))
            self.step(loss)
            steps += 1
        self._stats = {"updated": float(steps > 0), "reliable": _mean(reliable), "kept": _mean(kept),
                       "redundancy_blocked": float(blocked)}
        return steps

    def regulariser_size(self) -> float:
        """fisher_alpha * sum F (theta - theta_source)^2 at the current weights (for the README's check)."""
        if self.fisher is None:
            return 0.0
        with torch.no_grad():
            return float(self.cfg.fisher_alpha * sum(
                (f * (p - a) ** 2).sum() for f, p, a in zip(self.fisher, self.params, self.anchor)))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
