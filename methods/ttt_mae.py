"""``ttt_mae``: test-time training with masked reconstruction (Gandelsman, Sun, Chen & Efros, NeurIPS 2022,
"Test-Time Training with Masked Autoencoders"; official code yossigandelsman/test_time_training_mae,
``main_test_time_training.py`` / ``engine_test_time.py``; for points cf. Mirza et al., MATE, ICCV 2023).
On a ``joint-mae`` model: per scene, ``steps`` steps on the reconstruction loss of the input features
of masked blocks, updating the backbone only (heads frozen), then a separate prediction on the unmasked
scene; reset to the source model before every scene (episodic), as the official code. ``last_output``
stays None: the adapting forwards see a masked scene, so the prediction is always a separate forward.

Per step: a new mask (``backbones.losses.block_mask``: the scene's points grouped into grid cells of
``mask_cell`` = 0.4 m, each cell masked with probability ``mask_ratio`` = 0.5, one draw per occupied cell
from the scene's generator), the masked points' input features (colour, normals) replaced by zeros, the
loss the mean squared error between the reconstruction head's output and the true input features on the
masked points; BN normalises with the stored (source) statistics while adapting and predicting.

Deviations from the official TTT-MAE (ViT-Large MAE on ImageNet-C), stated:
- Network and training: official, an MAE-pretrained ViT encoder and decoder with a classifier head
  trained on the frozen encoder (probing); here a 3D backbone trained jointly for segmentation and
  reconstruction (``joint-mae`` recipe), its reconstruction head (a two-layer MLP) in the decoder's place.
  The official code adapts the encoder (decoder frozen, ``finetune_mode = encoder``); here the backbone.
- Masking: official, 75% of the 16x16 patches, dropped from the encoder's input (a ViT sees only the
  visible tokens); here 50% of 0.4 m blocks, kept in the input with zeroed features (a sparse
  convolution network cannot drop points without changing the geometry it convolves), so the masked
  points' coordinates stay visible and only their appearance and normals are hidden.
- Target: official, the masked patches' pixels normalised per patch (``norm_pix_loss``); here the raw
  input features of the masked points (MATE reconstructs the masked points' coordinates instead).
- Batch: official, each step on 128 copies of the test image with independent masks; here one masked copy
  per step.
- Optimizer and steps: official, SGD with momentum 0.9 at lr 5e-3 (``blr`` 1e-2 x 128 / 256), 20 steps;
  here Adam, lr 1e-4, 5 steps (the harness's TTT-KD defaults, so the two TTT rows differ in their
  self-supervised task only; ``bench select`` searches lr and steps).
- Normalisation: the ViT has LayerNorm only; the 3D backbone's BatchNorm keeps its source statistics
  (as TTT-KD's default), so a step changes weights, not statistics.
"""

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
