"""``tent``: entropy minimisation of the BatchNorm affine parameters, with test-batch statistics in
BN (Wang et al., ICLR 2021, "Tent: Fully Test-time Adaptation by Entropy Minimization"; official
code DequanWang/tent).

As the official ``forward_and_adapt``: one forward with batch statistics, the mean entropy over the
batch (here: every point of the scene), one optimizer step, online over the stream. Defaults: Adam,
lr 1e-3, 1 step per scene (the official CIFAR-10-C setting; its ImageNet setting is SGD 2.5e-4).
``last_output`` holds the logits of the adapting forward (computed before the update), which is what
the official code returns as its prediction."""

from dataclasses import dataclass
from typing import ClassVar

from backbones.losses import entropy
from bench.params import AT_LEAST_0, Check
from methods.base import Method, MethodConfig, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class TentConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 1e-3, 1e-2), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {"steps": AT_LEAST_0}
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
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            self.step(entropy(logits).mean())
        return self.cfg.steps
