"""``entropy``: full-model entropy minimisation: every backbone parameter is updated (the
"full" variant of entropy-based TTA, cf. Wang et al. 2021 and Niu et al. 2022 ablations)."""

from dataclasses import dataclass
from typing import ClassVar

from backbones.losses import entropy
from bench.params import AT_LEAST_0, Check, one_of
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class EntropyConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-5, 1e-4, 1e-3), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {"steps": AT_LEAST_0, "bn": one_of("test", "source")}
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-4
    bn: str = "test"  # BN statistics while adapting and predicting: test or source


@METHODS.register("entropy", config=EntropyConfig)
class Entropy(Method):
    """entropy minimisation of all backbone parameters"""

    def __init__(self, model, cfg):
        self.bn_mode = cfg.bn
        super().__init__(model, cfg)

    def adapt_params(self):
        return list(self.model.backbone.parameters())

    def adapt(self, inp):
        set_bn_mode(self.model, self.bn_mode)
        for _ in range(self.cfg.steps):
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            self.step(entropy(logits).mean())
        return self.cfg.steps
