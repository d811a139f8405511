"""``sar``: Sharpness-Aware and Reliable entropy minimisation (Niu et al., ICLR 2023, "Towards Stable
Test-Time Adaptation in Dynamic Wild World").

Updates the affine parameters of the normalisation layers with a SAM step (perturb the weights by
rho * g/|g|, take the gradient there, apply it at the original weights) on points whose entropy is
below ``e_margin`` (filtered again after the perturbation); a moving average of the loss below
``reset_constant`` triggers model recovery (reset to the source weights), as in the paper.
"""

import math
from dataclasses import dataclass

import torch

from backbones.losses import entropy
from bench.data.classes import NUM_CLASSES
from methods.base import NORM, Method, MethodConfig, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class SARConfig(MethodConfig):
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-3
    optimizer: str = "sgd"
    rho: float = 0.05
    e_margin: float = 0.4 * math.log(NUM_CLASSES)
    reset_constant: float = 0.2
    ema: float = 0.9


@METHODS.register("sar", config=SARConfig)
class SAR(Method):
    """sharpness-aware entropy minimisation on reliable points, norm affine params, with recovery"""

    bn_mode = "test"

    def adapt_params(self):
        return bn_affine_params(self.model.backbone, NORM)

    def on_reset(self):
        self.loss_ema = None

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.on_reset()

    def _reliable_loss(self, inp):
        ent = entropy(self.model(inp.batch)["seg"])
        keep = ent < self.cfg.e_margin
        return ent[keep].mean() if keep.any() else None

    def adapt(self, inp):
        set_bn_mode(self.model, "test")
        steps = 0
        for _ in range(self.cfg.steps):
            loss = self._reliable_loss(inp)
            if loss is None:
                break
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            norm = torch.norm(torch.stack([g.norm() for g in grads])) + 1e-12
            eps = [self.cfg.rho * g / norm for g in grads]
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.add_(e)
            self.optimizer.zero_grad(set_to_none=True)
            loss2 = self._reliable_loss(inp)
            if loss2 is not None:
                loss2.backward()
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.sub_(e)
            if loss2 is None:
                break
            self.optimizer.step()
            steps += 1
            v = loss2.item()
            self.loss_ema = v if self.loss_ema is None else self.cfg.ema * self.loss_ema + (1 - self.cfg.ema) * v
            if self.loss_ema < self.cfg.reset_constant:
                self.reset()  # model recovery
                break
        return steps
