"""``deyo``: Destroy Your Object (Lee, Jung, Kim, Ok, Yoon, Kim & Hwang, ICLR 2024, "Entropy is not
Enough for Test-Time Adaptation: From the Perspective of Disentangled Factors"; official code
Jhyun17/DeYO, also mariodoebler/test-time-adaptation ``methods/deyo.py``).

Entropy minimisation of the norm layers' affine parameters (BN with test-batch statistics) on
samples that pass two filters: entropy below ``deyo_margin``, and a pseudo-label probability
difference PLPD = p(y_hat | x) - p(y_hat | x') above ``plpd_threshold``, where ``x'`` is ``x`` with
its shape destroyed (patches shuffled) and ``y_hat`` the prediction on ``x``. The kept entropies are
weighted by ``exp(margin_e0 - H) + exp(PLPD)`` (official reweighting, both terms on), and their mean
is minimised with one step per batch. The prediction on ``x'`` takes no gradient.

3D adaptation (stated): a sample is a point and a batch one scene. Patch shuffling becomes
*column shuffling*: the scene's xy bounding box is cut into ``patch_len`` x ``patch_len`` equal
columns (full height, so floors stay at the bottom and walls upright), each point's column is
``clamp(floor((xy - min) / (extent / patch_len)), 0, patch_len - 1)``, a random permutation
``perm`` of the columns (``argsort`` of uniform draws from the scene's generator, as the official
``argsort(rand)``) moves column ``c`` to the place of column ``perm[c]`` by translating its points
by the difference of the two columns' corners; heights, colours and normals are unchanged and the
point order is kept, so PLPD compares each point with itself. Local geometry inside a column stays
intact while the room's layout (which object stands next to which) is destroyed, as shuffling
image patches keeps textures and destroys object shape. The official forward on ``x'`` sees only
the samples kept by the first filter; a point cannot be forwarded without its scene, so the whole
shuffled scene is forwarded and PLPD is read on the kept points.

Thresholds for 12 classes (stated rule): the entropy margins are fractions of the maximum entropy
``ln C``, as in the official code (0.5 ln C and 0.4 ln C), so they scale with C by construction. PLPD
is a drop in the predicted class's probability, whose largest meaningful value (a confident
prediction falling to a uniform one) is ``1 - 1/C``; the official value for a BN model in the mild
(i.i.d.) setting, 0.3 for C = 1000 (ResNet-50-BN on ImageNet-C, the official run script; 0.2, the
argparse default, is its value for the wild settings with GN/LN models), is scaled by that range:
``plpd_threshold = 0.3 (1 - 1/C) / (1 - 1/1000)`` = 0.275 for C = 12.

Defaults: ``patch_len`` 4 (official), margins and PLPD threshold as above, online. Adapted parameters:
the affine parameters of the backbone's norm layers except the top ones, as the official
``collect_params``, which is SAR's (it skips ``layer4`` of ResNet-50 and ``blocks.9-11`` plus the final
``norm`` of ViT-Base: the layers next to the classifier); a sparse UNet has no such names, so the rule is
SAR's positional one here too: the last ``skip_top`` = 25% of the norm layers in forward order stay frozen
(``methods.sar.norm_params_below_top``; 6 of 24 BN layers on the default SpUNet, the full-resolution
decoder stage). Optimizer Adam with lr 1e-3 as this harness's TENT (official: SGD, lr 2.5e-4, momentum
0.9 for batches of 64 ImageNet images), so that DeYO and TENT differ only in the selection, the
reweighting and the frozen top layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from backbones.batch import PointBatch
from backbones.losses import entropy
from bench.data.classes import NUM_CLASSES
from bench.params import AT_LEAST_0, UNIT, Check, Range
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS
from methods.sar import norm_params_below_top


@dataclass
class DeYOConfig(MethodConfig):
    # untrained tiny model: open the entropy filter, keep the points whose prediction shuffling changes at all
    TEST_PARAMS: ClassVar[dict[str, object]] = {"deyo_margin": 10.0, "plpd_threshold": 0.0}
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 1e-3, 1e-2), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "deyo_margin": AT_LEAST_0, "margin_e0": AT_LEAST_0, "plpd_threshold": Range(-1, 1),
        "patch_len": Range(2), "skip_top": UNIT,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3
    deyo_margin: float = 0.5 * math.log(NUM_CLASSES)  # entropy filter
    margin_e0: float = 0.4 * math.log(NUM_CLASSES)  # entropy reweighting
    plpd_threshold: float = 0.3 * (1 - 1 / NUM_CLASSES) / (1 - 1 / 1000)
    patch_len: int = 4  # columns per side of the shuffle grid
    reweight_ent: bool = True
    reweight_plpd: bool = True
    skip_top: float = 0.25  # fraction of the norm layers (last in forward order) left frozen, as SAR


def shuffle_columns(batch: PointBatch, patch_len: int, g: torch.Generator) -> PointBatch:
    """The batch with each scene's xy columns (``patch_len`` x ``patch_len``) permuted; point order kept."""
    coord = batch.coord.clone()
    for s in range(batch.num_scenes):
        sel = batch.batch == s
        xy = batch.coord[sel, :2]
        lo = xy.min(0).values
        size = (xy.max(0).values - lo).clamp_min(1e-6) / patch_len
        cell = ((xy - lo) / size).floor().long().clamp(0, patch_len - 1)
        cid = cell[:, 0] * patch_len + cell[:, 1]
        perm = torch.argsort(torch.rand(patch_len * patch_len, generator=g)).to(cid.device)
        corner = torch.stack([torch.arange(patch_len).repeat_interleave(patch_len),
                              torch.arange(patch_len).repeat(patch_len)], 1).to(xy) * size
        coord[sel, :2] = xy + corner[perm[cid]] - corner[cid]
    return PointBatch(coord, batch.feat, batch.batch, batch.num_scenes)


@METHODS.register("deyo", config=DeYOConfig)
class DeYO(Method):
    """entropy minimisation on points that are confident and lose confidence when the room's columns are shuffled"""

    bn_mode = "test"

    def adapt_params(self):
        params, self.frozen_top = norm_params_below_top(self.model, self.cfg.skip_top)
        return params

    def adapt(self, inp):
        set_bn_mode(self.model, "test")
        steps = 0
        for _ in range(self.cfg.steps):
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            ent = entropy(logits)
            keep = ent < self.cfg.deyo_margin
            if not keep.any():
                break
            with torch.no_grad():
                prime = self.model(shuffle_columns(inp.batch, self.cfg.patch_len, inp.generator))["seg"]
                prob = logits[keep].detach().softmax(1)
                cls = prob.argmax(1, keepdim=True)
                plpd = (prob.gather(1, cls) - prime[keep].softmax(1).gather(1, cls)).flatten()
            keep2 = plpd > self.cfg.plpd_threshold
            if not keep2.any():
                break
            ent, plpd = ent[keep][keep2], plpd[keep2]
            coeff = (float(self.cfg.reweight_ent) / torch.exp(ent.detach() - self.cfg.margin_e0)
                     + float(self.cfg.reweight_plpd) / torch.exp(-plpd))
            if self.cfg.reweight_ent or self.cfg.reweight_plpd:
                ent = ent * coeff
            self.step(ent.mean())
            steps += 1
        return steps
