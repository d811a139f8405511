"""``tent``: entropy minimisation of the BatchNorm affine parameters, with test-batch statistics in
BN (Wang et al., ICLR 2021, "Tent: Fully Test-time Adaptation by Entropy Minimization")."""

from dataclasses import dataclass

from backbones.losses import entropy
from methods.base import Method, MethodConfig, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class TentConfig(MethodConfig):
    episodic: bool = False  # Tent adapts online over the stream
    steps: int = 1
    lr: float = 1e-3


@METHODS.register("tent", config=TentConfig)
class Tent(Method):
    """entropy minimisation of BN affine parameters, BN with test statistics"""

    bn_mode = "test"

    def adapt_params(self):
        return bn_affine_params(self.model.backbone)

    def adapt(self, inp):
        set_bn_mode(self.model, "test")
        for _ in range(self.cfg.steps):
            self.step(entropy(self.model(inp.batch)["seg"]).mean())
        return self.cfg.steps
