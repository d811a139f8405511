"""``bn_adapt``: BatchNorm normalises with the test scene's statistics (Schneider et al., NeurIPS 2020,
"Improving robustness against common corruptions by covariate shift adaptation"), optionally
mixed with the source statistics. No gradient step.

Every BN layer normalises its input with mean = prior * mu_source + (1 - prior) * mu_scene and
variance = prior * var_source + (1 - prior) * var_scene, where mu_scene and var_scene are the mean
and the *biased* variance of that layer's input on this scene, the same statistics that
batch-statistics BN (``model.train()``) normalises with. The mixing happens inside one forward
pass, layer by layer, so each layer's scene statistics are measured on the input it really gets
(produced by the mixed normalisation of the layers below), as the paper's per-layer formula
prescribes. (Before, the scene statistics were measured in a separate pass with pure test
statistics, stored through ``momentum = 1`` (the unbiased variance) and mixed afterwards: a layer
then mixed statistics of an input it never sees.) prior = 0 is exactly test-batch BN; prior = 1 is
the source model. The paper writes prior = N / (N + n) for a source "pseudo-batch" of N samples;
here it is given directly (default 0: the scene's ~20k points are far more than any sensible N).

Stateless: nothing is stored between scenes, so episodic and online are the same. ``last_output``
holds the logits of the adapting forward, which is also the prediction.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.params import UNIT, Check
from methods.base import BN, Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class BNAdaptConfig(MethodConfig):
    CHECKS: ClassVar[dict[str, Check]] = {"prior": UNIT}
    prior: float = 0.0  # weight of the source statistics (0 = test statistics only)


def _mixed_forward(m: BN, prior: float):
    def forward(x: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        mu = prior * m.running_mean + (1 - prior) * mean
        v = prior * m.running_var + (1 - prior) * var
        return F.batch_norm(x, mu, v, m.weight, m.bias, False, 0.0, m.eps)
    return forward


@contextlib.contextmanager
def mixed_bn(model: torch.nn.Module, prior: float):
    """Within the block every BN layer normalises with prior-mixed statistics (one pass, see above)."""
    if prior == 0.0:  # exactly batch-statistics BN (torch's fused kernel)
        set_bn_mode(model, "test")
        try:
            yield
        finally:
            set_bn_mode(model, "source")
        return
    set_bn_mode(model, "source")
    bns = [m for m in model.modules() if isinstance(m, BN)]
    for m in bns:
        m.forward = _mixed_forward(m, prior)
    try:
        yield
    finally:
        for m in bns:
            del m.forward


@METHODS.register("bn_adapt", config=BNAdaptConfig)
class BNAdapt(Method):
    """BN uses the test scene's statistics (mixed with source by `prior`); no gradient steps"""

    @torch.no_grad()
    def adapt(self, inp):
        self.last_output = self.predict(inp)
        return 0

    @torch.no_grad()
    def predict(self, inp):
        with mixed_bn(self.model, self.cfg.prior):
            return self.model(inp.batch)["seg"]
