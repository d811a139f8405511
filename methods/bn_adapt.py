"""``bn_adapt``: BatchNorm normalises with the test scene's statistics (Schneider et al., NeurIPS 2020,
"Improving robustness against common corruptions by covariate shift adaptation"), optionally mixed
with the source statistics: stats = prior * source + (1 - prior) * test. No gradient step."""

from dataclasses import dataclass

import torch

from methods.base import BN, Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class BNAdaptConfig(MethodConfig):
    prior: float = 0.0  # weight of the source statistics (0 = test statistics only)


@METHODS.register("bn_adapt", config=BNAdaptConfig)
class BNAdapt(Method):
    """BN uses the test scene's statistics (mixed with source by `prior`); no gradient steps"""

    @torch.no_grad()
    def adapt(self, inp):
        bns = [m for m in self.model.modules() if isinstance(m, BN)]
        source = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
        set_bn_mode(self.model, "update", momentum=1.0)  # running stats := this scene's batch stats
        self.model(inp.batch)
        p = self.cfg.prior
        for m, (mu, var) in zip(bns, source):
            m.running_mean.mul_(1 - p).add_(p * mu)
            m.running_var.mul_(1 - p).add_(p * var)
        set_bn_mode(self.model, "source")
        return 0
