"""``cotta``: Continual Test-Time Adaptation (Wang et al., CVPR 2022).

A student (the model) learns from an exponential-moving-average teacher's soft pseudo-labels; when
the source model's confidence on the scene is below ``ap``, the teacher's prediction is averaged
over ``n_aug`` augmented copies. After each step, each weight element is restored to its source
value with probability ``restore`` (stochastic restoration against forgetting). The teacher makes
the final prediction. Adapts the backbone and the label projector; BN with test statistics.
"""

import copy
from dataclasses import dataclass

import torch

from methods.augment import augment_batch
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class CoTTAConfig(MethodConfig):
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-4
    ema: float = 0.999
    restore: float = 0.01
    ap: float = 0.9
    n_aug: int = 4


@METHODS.register("cotta", config=CoTTAConfig)
class CoTTA(Method):
    """mean-teacher pseudo-labels with augmentation averaging and stochastic restoration"""

    bn_mode = "test"

    def adapt_params(self):
        return list(self.model.backbone.parameters()) + list(self.model.heads["seg"].parameters())

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.source = [p.detach().clone() for p in self.params]
        self.on_reset()

    def on_reset(self):
        self.teacher = copy.deepcopy(self.model)
        self.teacher.requires_grad_(False)

    def adapt(self, inp):
        feats = self.model.spec.features
        for _ in range(self.cfg.steps):
            set_bn_mode(self.model, "test")
            set_bn_mode(self.teacher, "test")
            with torch.no_grad():
                t_prob = self.teacher(inp.batch)["seg"].softmax(1)
                if t_prob.max(1).values.mean() < self.cfg.ap:
                    aug = [self.teacher(augment_batch(inp.batch, feats, inp.generator))["seg"].softmax(1)
                           for _ in range(self.cfg.n_aug)]
                    t_prob = torch.stack(aug).mean(0)
            logits = self.model(inp.batch)["seg"]
            self.step(-(t_prob * logits.log_softmax(1)).sum(1).mean())
            with torch.no_grad():
                t_params = list(self.teacher.backbone.parameters()) + list(self.teacher.heads["seg"].parameters())
                for tp, p in zip(t_params, self.params):
                    tp.mul_(self.cfg.ema).add_((1 - self.cfg.ema) * p)
                for p, s in zip(self.params, self.source):
                    m = torch.rand(p.shape, generator=inp.generator) < self.cfg.restore
                    p.copy_(torch.where(m.to(p.device), s, p))
        return self.cfg.steps

    @torch.no_grad()
    def predict(self, inp):
        set_bn_mode(self.teacher, "test")
        return self.teacher(inp.batch)["seg"]
