"""``dua``: Dynamic Unsupervised Adaptation (Mirza et al., CVPR 2022): BatchNorm running statistics
are updated from augmented copies of the test scene with a momentum that decays after every copy
(momentum_i = max(m0 * decay^i, m_min)); no gradient step. Predicts with the updated statistics."""

from dataclasses import dataclass

import torch

from methods.augment import augment_batch
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class DUAConfig(MethodConfig):
    copies: int = 16
    momentum: float = 0.1
    decay: float = 0.94
    min_momentum: float = 0.005


@METHODS.register("dua", config=DUAConfig)
class DUA(Method):
    """BN statistics from augmented copies of the scene with decaying momentum; no gradient steps"""

    @torch.no_grad()
    def adapt(self, inp):
        mom = self.cfg.momentum
        for _ in range(self.cfg.copies):
            set_bn_mode(self.model, "update", momentum=mom)
            self.model(augment_batch(inp.batch, self.model.spec.features, inp.generator))
            mom = max(mom * self.cfg.decay, self.cfg.min_momentum)
        set_bn_mode(self.model, "source")
        return 0
