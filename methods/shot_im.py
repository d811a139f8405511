"""``shot_im``: information maximisation with a frozen classifier (Liang, Hu & Feng, ICML 2020, "Do We
Really Need to Access the Source Data? Source Hypothesis Transfer for Unsupervised Domain
Adaptation", the SHOT-IM variant without pseudo-labels; official code tim-learn/SHOT,
``object/image_target.py``).

Loss (official, ``ent_par`` = 1): mean per-sample entropy minus the entropy of the mean prediction,
``L = E_i[H(p_i)] - H(mean_i p_i)``, with ``H(p) = -sum p log(p + 1e-5)``: confident and diverse
predictions. The source hypothesis (the classifier) is frozen; the feature extractor (backbone
and bottleneck) adapts with SGD (momentum 0.9, Nesterov, weight decay 1e-3), its BN layers in train
mode (batch statistics, running statistics updated), predictions with the running statistics.

3D adaptation (stated): a "sample" is a point and a batch is one scene, so the diversity term asks
the scene's mean point prediction to be spread over the 12 classes. Indoor scenes are dominated by
wall/floor points, so this prior is stronger than on class-balanced image batches; ``div_weight``
scales it (1 = official). The label head is a two-layer MLP: its first Linear+ReLU plays SHOT's
bottleneck (adapted), its last Linear the classifier (frozen). SHOT is an offline method run for
epochs over the target set; here it runs online, one step per scene, as the TTA suites (TTAB,
mariodoebler/test-time-adaptation) run it.

Defaults (official ``image_target.py``): lr 1e-2, the backbone at ``lr_decay1`` = 0.1 of it and the
bottleneck at ``lr_decay2`` = 1; SGD momentum 0.9, Nesterov, weight decay 1e-3; ``eps`` 1e-5; loss
weights 1. Not carried over: SHOT's polynomial lr decay over its epochs (there is no fixed number of
iterations in an online stream). Ours: online (``episodic = False``), one step per scene; BN running
statistics move with momentum ``bn_momentum`` (0.1, PyTorch's default, used by SHOT's BN layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bench.params import AT_LEAST_0, POSITIVE, UNIT, Check
from methods.base import Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class ShotIMConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-3, 1e-2, 1e-1), "steps": (1, 3)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "lr_decay1": AT_LEAST_0, "lr_decay2": AT_LEAST_0, "weight_decay": AT_LEAST_0,
        "div_weight": AT_LEAST_0, "eps": POSITIVE, "bn_momentum": UNIT,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 1e-2
    lr_decay1: float = 0.1  # backbone learning rate = lr * lr_decay1
    lr_decay2: float = 1.0  # bottleneck (label head's hidden layer) learning rate = lr * lr_decay2
    optimizer: str = "sgd"
    weight_decay: float = 1e-3
    nesterov: bool = True
    div_weight: float = 1.0  # weight of the diversity term (SHOT: 1)
    eps: float = 1e-5
    bn_momentum: float = 0.1


def info_max_loss(logits: torch.Tensor, eps: float, div_weight: float) -> torch.Tensor:
    p = logits.softmax(1)
    ent = -(p * torch.log(p + eps)).sum(1).mean()
    p_bar = p.mean(0)
    div = -(p_bar * torch.log(p_bar + eps)).sum()
    return ent - div_weight * div


@METHODS.register("shot_im", config=ShotIMConfig)
class ShotIM(Method):
    """information maximisation (entropy + diversity), classifier frozen, feature extractor adapted"""

    def adapt_params(self):
        return list(self.model.backbone.parameters()) + list(self.model.heads["seg"][0].parameters())

    def make_optimizer(self, params):
        cfg = self.cfg
        bottleneck = {id(p) for p in self.model.heads["seg"][0].parameters()}
        groups = [{"params": [p for p in params if id(p) not in bottleneck], "lr": cfg.lr * cfg.lr_decay1},
                  {"params": [p for p in params if id(p) in bottleneck], "lr": cfg.lr * cfg.lr_decay2}]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                   nesterov=cfg.nesterov)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)  # CHECKS: sgd or adam

    def adapt(self, inp):
        for _ in range(self.cfg.steps):
            set_bn_mode(self.model, "update", momentum=self.cfg.bn_momentum)
            logits = self.model(inp.batch)["seg"]
            self.last_output = logits.detach()
            self.step(info_max_loss(logits, self.cfg.eps, self.cfg.div_weight))
        set_bn_mode(self.model, "source")
        return self.cfg.steps
