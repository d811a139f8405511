"""``roid``: universal test-time adaptation through weight ensembling, diversity weighting and prior
correction (Marsden, Doebler & Yang, WACV 2024, "Universal Test-time Adaptation through Weight
Ensembling, Diversity Weighting, and Prior Correction"; official code mariodoebler/test-time-adaptation
``methods/roid.py``).

Per batch, as in the official code (BN with batch statistics, the norm layers' affine parameters
adapted):
- diversity weight ``1 - cos(p_bar_ema, p_i)`` and certainty weight ``-H(p_i)``, each min-max
  normalised over the batch; samples with a diversity weight below its batch mean are masked out;
  the others get ``exp(w_div * w_cert / temperature)``; ``p_bar_ema`` (initially uniform) moves
  towards the batch's mean prediction with momentum ``momentum_probs``;
- loss: soft likelihood ratio ``-sum_c p_c log(p_c / (1 - p_c) + 1e-5)`` (p clipped to 0.99), weighted,
  plus the weighted symmetric cross-entropy (alpha 0.5) between the prediction on an augmented copy
  and the original prediction (no stop-gradient on either, as official), both summed over the
  unmasked samples and divided by the batch size;
- after the step, weight ensembling of the adapted parameters with the source ones:
  ``theta <- momentum_src * theta + (1 - momentum_src) * theta_source``;
- prior correction of the output: ``logits * (prior + s) / (1 + s C)`` with ``prior`` the batch's mean
  prediction and ``s = max(1/N, 1/C) / max(prior)`` (the official code multiplies the logits).

3D adaptation (stated): a sample is a point and a batch one scene (N ~ 20k points, so ``s`` is
``(1/C) / max(prior)``). The augmented copy is the whole scene under ``methods.augment.augment_batch``
(rotation about z, scale, jitter, colour jitter; point order kept) in place of the official image
transforms, since a point cannot be forwarded without its scene; the consistency term is read on
the unmasked points. The prediction (a separate forward after the update, or the adapting forward
for ``predict = "same"``) gets the prior correction of its own scene. The min-max normalisations
divide by ``max(range, 1e-12)`` so a constant weight cannot give NaN (the official divides by the
range; identical otherwise).

Defaults (official): momentum_src 0.99, momentum_probs 0.9, temperature 1/3, weighting, prior
correction and consistency on, online. Optimizer Adam, lr 1e-3: our choice, as this harness's
TENT/EATA, so ROID differs from them only in its algorithm (the official configs set optimizer and
lr per dataset for image models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from backbones.losses import entropy
from bench.params import AT_LEAST_0, POSITIVE, UNIT, Check
from methods.augment import augment_batch
from methods.base import NORM, Method, MethodConfig, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class ROIDConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 1e-3, 1e-2), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "momentum_src": UNIT, "momentum_probs": UNIT, "temperature": POSITIVE,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3
    momentum_src: float = 0.99  # weight ensembling with the source parameters
    momentum_probs: float = 0.9  # moving average of the mean prediction (diversity weight)
    temperature: float = 1 / 3
    use_weighting: bool = True
    use_prior_correction: bool = True
    use_consistency: bool = True


def soft_likelihood_ratio(logits: torch.Tensor, clip: float = 0.99, eps: float = 1e-5) -> torch.Tensor:
    p = logits.softmax(1).clamp(0.0, clip)
    return -(p * torch.log(p / (1 - p) + eps)).sum(1)


def symmetric_ce(x: torch.Tensor, x_ema: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    return (-(1 - alpha) * (x_ema.softmax(1) * x.log_softmax(1)).sum(1)
            - alpha * (x.softmax(1) * x_ema.log_softmax(1)).sum(1))


def min_max(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def prior_corrected(logits: torch.Tensor) -> torch.Tensor:
    n, c = logits.shape
    prior = logits.softmax(1).mean(0)
    smooth = max(1 / n, 1 / c) / prior.max()
    return logits * ((prior + smooth) / (1 + smooth * c))


@METHODS.register("roid", config=ROIDConfig)
class ROID(Method):
    """diversity- and certainty-weighted SLR + consistency, weight ensembling with the source, prior correction"""

    bn_mode = "test"

    def __init__(self, model, cfg: ROIDConfig):
        super().__init__(model, cfg)
        self.source = [p.detach().clone() for p in self.params]
        self.on_reset()

    def adapt_params(self):
        return bn_affine_params(self.model.backbone, NORM)

    def on_reset(self):
        c = self.model.spec.num_classes
        self.probs_ema = torch.full((c,), 1.0 / c, device=next(self.model.parameters()).device)

    def _out(self, logits: torch.Tensor) -> torch.Tensor:
        return prior_corrected(logits) if self.cfg.use_prior_correction else logits

    def adapt(self, inp):
        cfg = self.cfg
        for _ in range(cfg.steps):
            set_bn_mode(self.model, "test")
            logits = self.model(inp.batch)["seg"]
            n = logits.shape[0]
            keep = torch.ones(n, dtype=torch.bool, device=logits.device)
            weights = torch.ones(n, device=logits.device)
            if cfg.use_weighting:
                with torch.no_grad():
                    prob = logits.softmax(1)
                    w_div = min_max(1 - F.cosine_similarity(self.probs_ema[None], prob, dim=1))
                    keep = ~(w_div < w_div.mean())
                    w_cert = min_max(-entropy(logits))
                    weights = torch.exp(w_div * w_cert / cfg.temperature)
                    weights[~keep] = 0.0
                    self.probs_ema = cfg.momentum_probs * self.probs_ema + (1 - cfg.momentum_probs) * prob.mean(0)
            loss = (soft_likelihood_ratio(logits) * weights)[keep].sum() / n
            if cfg.use_consistency:
                aug = self.model(augment_batch(inp.batch, self.model.spec.features, inp.generator))["seg"]
                loss = loss + (symmetric_ce(aug[keep], logits[keep]) * weights[keep]).sum() / n
            self.step(loss)
            with torch.no_grad():
                for p, s in zip(self.params, self.source):
                    p.mul_(cfg.momentum_src).add_((1 - cfg.momentum_src) * s)
            self.last_output = self._out(logits.detach())
        return cfg.steps

    @torch.no_grad()
    def predict(self, inp):
        set_bn_mode(self.model, "test")
        return self._out(self.model(inp.batch)["seg"])
