"""``sar``: Sharpness-Aware and Reliable entropy minimisation (Niu et al., ICLR 2023, "Towards Stable
Test-Time Adaptation in Dynamic Wild World"; official code mr-eggplant/SAR, ``sar.py``/``sam.py``).

Per step, as the official ``forward_and_adapt_sar``: (1) forward with batch statistics, keep the
points whose entropy is below ``e_margin`` (filter 1), backward their mean entropy; (2) SAM first
step: move the weights by rho * g / |g|; (3) forward again, take the entropies *of the points that
passed filter 1* and keep those still below ``e_margin`` (filter 2), backward their mean; (4) return
to the saved weights and take the base-optimizer step (SGD, momentum 0.9) with that gradient;
(5) the moving average (0.9) of the filter-2 loss below ``reset_constant`` triggers model recovery
(weights and optimizer back to the source). As in the official code, the moving average itself
survives a recovery (its ``reset()`` clears it, then the caller writes it back), so recovery keeps
firing until the average rises above the threshold again.

Adapted parameters: the affine parameters of the normalisation layers, except the top ones. The
official code skips ``layer4`` of ResNet-50 (the last of its four stages: 10 of 53 BN layers, 19%)
and ``blocks.9-11`` plus the final ``norm`` of ViT-Base (7 of 25 LayerNorms, 28%): the layers next
to the classifier. A sparse UNet has no such names, so the rule here is positional: the norm layers
of the last ``skip_top`` = 25% of the backbone in forward order (found once by a probe forward on a
small synthetic scene, since module registration order is not forward order in a UNet) are frozen.
On the default SpUNet (24 BN layers) that is 6 layers: both BNs of the finest decoder block of the
second-finest level (``dec.1``) and ``up.0``, ``fuse.0`` and both BNs of ``dec.0``, i.e. the
full-resolution decoder stage that feeds the heads.

3D rules (a "batch" is one scene of ~20k points, C = 12 classes, not 1000):
- ``e_margin`` = 0.4 ln C, the paper's rule (0.4 ln 1000 on ImageNet).
- ``reset_constant`` = 0.2 ln C / ln 1000 (= 0.072 for C = 12): the official 0.2 is an entropy for
  1000 classes, i.e. 2.9% of the maximum entropy ln 1000; the same fraction of ln C keeps its meaning
  for C classes. (Unscaled, 0.2 fires on every in-distribution scene, where reliable points have an
  entropy of ~0.15: SAR degenerates to the source weights with test-batch BN.)
- When no point passes filter 1 (or filter 2) no step is taken at all. The official code then
  backpropagates a NaN/empty mean whose gradient is zero, and SGD's momentum still moves the weights.

``last_output`` holds the logits of the first forward of the last step (before its update), which
is what the official code returns as its prediction.

Per-scene record (``scene_stats()``, a ``stat_<key>`` column of each scene row): ``reset``, the number
of model recoveries during the scene's adaptation (0 or 1 with one step per scene), and ``updated``,
1 if at least one step was taken.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from backbones.batch import PointBatch, in_channels
from backbones.losses import entropy
from bench.data.classes import NUM_CLASSES
from bench.params import AT_LEAST_0, UNIT, Check
from methods.base import NORM, Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class SARConfig(MethodConfig):
    TEST_PARAMS: ClassVar[dict[str, object]] = {"e_margin": 10.0}  # untrained tiny model: open the entropy filter
    # SGD (momentum 0.9): learning rates up to 1, where Adam-sized ones leave the weights in place
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-3, 1e-2, 1e-1, 1.0), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "rho": AT_LEAST_0, "e_margin": AT_LEAST_0, "reset_constant": AT_LEAST_0, "ema": UNIT,
        "skip_top": UNIT,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3
    optimizer: str = "sgd"
    rho: float = 0.05
    e_margin: float = 0.4 * math.log(NUM_CLASSES)
    reset_constant: float = 0.2 * math.log(NUM_CLASSES) / math.log(1000)
    ema: float = 0.9
    skip_top: float = 0.25  # fraction of the norm layers (last in forward order) left frozen


def norm_layers_in_forward_order(model) -> list[torch.nn.Module]:
    """The backbone's normalisation layers in the order a forward pass first calls them (probe forward
    on a small seeded synthetic scene; the model is in eval mode, so nothing in it changes)."""
    order: list[torch.nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.backbone.modules() if isinstance(m, NORM)]
    g = torch.Generator().manual_seed(0)
    n = 4096
    coord = torch.rand(n, 3, generator=g) * torch.tensor([4.0, 4.0, 2.5])
    feat = torch.rand(n, in_channels(model.spec.features), generator=g) * 2 - 1
    device = next(model.parameters()).device
    was_training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model.backbone(PointBatch(coord, feat, torch.zeros(n, dtype=torch.long), 1).to(device))
    finally:
        for h in hooks:
            h.remove()
        for m, t in was_training:
            m.train(t)
    seen: list[torch.nn.Module] = []
    for m in order:
        if not any(m is s for s in seen):
            seen.append(m)
    return seen


def norm_params_below_top(model, skip_top: float) -> tuple[list[torch.nn.Parameter], list[torch.nn.Module]]:
    """The affine parameters of the backbone's norm layers except the last ``skip_top`` share of them in
    forward order (SAR's and DeYO's ``collect_params``), and the frozen top layers."""
    layers = norm_layers_in_forward_order(model)
    n_skip = round(skip_top * len(layers))
    params = []
    for m in layers[:len(layers) - n_skip]:
        params += [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
    return params, layers[len(layers) - n_skip:]


@METHODS.register("sar", config=SARConfig)
class SAR(Method):
    """sharpness-aware entropy minimisation on reliable points, norm affine params, with recovery"""

    bn_mode = "test"

    def adapt_params(self):
        params, self.frozen_top = norm_params_below_top(self.model, self.cfg.skip_top)
        return params

    def on_reset(self):
        self.loss_ema = None

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.on_reset()
        self._stats: dict[str, float] = {}

    def scene_stats(self) -> dict[str, float]:
        """Model recoveries (``reset``) and whether a step was taken (``updated``) on the last scene."""
        return dict(self._stats)

    def adapt(self, inp):
        steps = resets = 0
        self._stats = {"reset": 0.0, "updated": 0.0}
        self.last_output = None
        for _ in range(self.cfg.steps):
            set_bn_mode(self.model, "test")
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            ent = entropy(logits)
            keep1 = ent < self.cfg.e_margin
            if not keep1.any():
                break
            self.optimizer.zero_grad(set_to_none=True)
            ent[keep1].mean().backward()
            # SAM first step: climb to w + rho * g / |g|
            grads = [p.grad for p in self.params]
            norm = torch.norm(torch.stack([g.norm(2) for g in grads if g is not None]), 2)
            old = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p, g in zip(self.params, grads):
                    if g is not None:
                        p.add_(g * (self.cfg.rho / (norm + 1e-12)))
            self.optimizer.zero_grad(set_to_none=True)
            ent2 = entropy(self.model(inp.batch)["seg"])[keep1]
            keep2 = ent2 < self.cfg.e_margin
            if keep2.any():
                loss2 = ent2[keep2].mean()
                loss2.backward()
            with torch.no_grad():
                for p, o in zip(self.params, old):
                    p.copy_(o)
            if not keep2.any():
                self.optimizer.zero_grad(set_to_none=True)
                break
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            steps += 1
            v = loss2.item()
            self.loss_ema = v if self.loss_ema is None else self.cfg.ema * self.loss_ema + (1 - self.cfg.ema) * v
            if self.loss_ema < self.cfg.reset_constant:  # model recovery; the average survives it (official)
                ema = self.loss_ema
                self.reset()
                self.loss_ema = ema
                resets += 1
        self._stats = {"reset": float(resets), "updated": float(steps > 0)}
        return steps
