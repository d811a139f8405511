"""``ttt_mae``: test-time training with masked reconstruction (Gandelsman et al., NeurIPS 2022,
"Test-Time Training with Masked Autoencoders"; for points cf. Mirza et al., MATE, ICCV 2023). On a
``joint-mae`` model: k steps on the reconstruction loss of the input features of masked blocks,
updating the backbone only (heads frozen), then predict; episodic by default. ``last_output`` stays
None: the adapting forwards see a masked scene, so the prediction is always a separate forward."""

from dataclasses import dataclass
from typing import ClassVar

from backbones.losses import block_mask, masked_input, reconstruction_loss
from bench.params import AT_LEAST_0, POSITIVE, UNIT, Check
from methods.base import Method, MethodConfig, Needs, set_bn_mode
from methods.registry import METHODS


@dataclass
class TTTMAEConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (3e-5, 1e-4, 3e-4), "steps": (5, 25, 50)}
    CHECKS: ClassVar[dict[str, Check]] = {"steps": AT_LEAST_0, "mask_ratio": UNIT, "mask_cell": POSITIVE}
    steps: int = 5
    lr: float = 1e-4
    mask_ratio: float = 0.5
    mask_cell: float = 0.4


@METHODS.register("ttt_mae", config=TTTMAEConfig)
class TTTMAE(Method):
    """TTT on masked-point reconstruction (needs a joint-mae model); backbone updated, heads frozen"""

    needs = Needs(recipe="joint-mae")

    def adapt_params(self):
        return list(self.model.backbone.parameters())

    def adapt(self, inp):
        self.last_output = None
        set_bn_mode(self.model, "source")
        for _ in range(self.cfg.steps):
            mask = block_mask(inp.batch, self.cfg.mask_ratio, self.cfg.mask_cell, inp.generator)
            rec = self.model(masked_input(inp.batch, mask), ("mae",))["mae"]
            self.step(reconstruction_loss(rec, inp.batch, mask))
        return self.cfg.steps
