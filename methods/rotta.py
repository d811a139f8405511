"""``rotta``: Robust Test-Time Adaptation (Yuan, Xie & Li, CVPR 2023, "Robust Test-Time Adaptation in
Dynamic Scenarios"; official code BIT-DA/RoTTA, also mariodoebler/test-time-adaptation
``methods/rotta.py``).

Three parts, as in the official code:
- Robust BN (RBN): every BN layer normalises with global statistics that move towards each training
  batch's statistics by ``alpha`` (``mu <- (1 - alpha) mu + alpha mu_batch``, the same for the biased
  variance; the current batch's contribution keeps its gradient) and with the global statistics in
  eval mode. Its affine parameters are the only ones adapted (Adam).
- Category-balanced sampling with timeliness and uncertainty (CSTU): a memory bank of
  ``memory_size`` instances, each with the teacher's pseudo-label, its uncertainty (entropy) and age.
  A new instance enters if its class has room (fewer than memory_size / C) and the bank has room;
  otherwise the instance with the highest score ``lambda_t / (1 + exp(-age / memory_size)) +
  lambda_u * H / ln C`` among the majority classes (or among its own class when that class is full)
  is evicted if its score exceeds the new one's. Every ``update_frequency`` instances the model
  updates on the bank.
- Teacher-student update with time-aware reweighting: the student sees a strong augmentation of the
  bank, the EMA teacher (``nu`` = 0.001) the bank itself, both with RBN in train mode; the loss is
  the cross-entropy to the teacher's soft prediction, weighted per instance by
  ``exp(-a) / (1 + exp(-a))`` with ``a = age / memory_size``. The teacher predicts (eval mode).

3D adaptation (stated): an image is one instance; a scene is not (a bank of 64 scenes would be
updated once per 64 scenes and hold ~1M points). An instance here is a *block*: the scene's points
in one ``block_size`` x ``block_size`` m column of the xy grid (full height; blocks with fewer than
``min_block_points`` points are not instances), blocks taken in grid order. Its pseudo-label is the
majority vote of the teacher's point labels in the block (ties: the lower class index), its
uncertainty the mean point entropy (``-sum p log(p + 1e-6)``, official). The bank's blocks form one
multi-scene batch (each block its own scene, so voxelised on its own); a block's loss is the mean
over its points. The strong augmentation is ``methods.augment.augment_batch`` (rotation about z,
scale, jitter, colour jitter) in place of the official image transforms. The teacher's prediction on
the scene comes from its forward before the scene's updates, as the official code returns it.

Defaults (official): memory_size 64, update_frequency 64, nu 0.001, alpha 0.05, lambda_t 1,
lambda_u 1, Adam lr 1e-3, online. Ours: block_size 1 m (indoor training crops are a few metres;
a 1 m column holds a few hundred points of a ~20k-point room, so a scene gives tens of instances),
min_block_points 16.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from backbones.batch import PointBatch
from bench.errors import BenchError
from bench.params import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Check
from methods.augment import augment_batch
from methods.base import BN, Method, MethodConfig, bn_affine_params, set_bn_mode
from methods.registry import METHODS


@dataclass
class RoTTAConfig(MethodConfig):
    # updates every 4 blocks on a class's memory of up to 5 blocks (60 / 12 classes; an untrained model predicts
    # one class), so an update also sees earlier blocks and evicts; a teacher that follows the student visibly
    TEST_PARAMS: ClassVar[dict[str, object]] = {"memory_size": 60, "update_frequency": 4, "nu": 0.2}
    # its score did not move with lr 1e-4..1e-2 (v1): learning rates up to 1, diverging ones left out
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (1e-4, 1e-3, 1e-2, 1e-1, 1.0)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "memory_size": AT_LEAST_1, "update_frequency": AT_LEAST_1, "nu": UNIT, "alpha": UNIT, "lambda_t": AT_LEAST_0,
        "lambda_u": AT_LEAST_0, "block_size": POSITIVE, "min_block_points": AT_LEAST_0,
    }
    episodic: bool = False
    lr: float = 1e-3
    memory_size: int = 64
    update_frequency: int = 64
    nu: float = 0.001  # teacher EMA: teacher <- (1 - nu) teacher + nu student
    alpha: float = 0.05  # RBN momentum
    lambda_t: float = 1.0
    lambda_u: float = 1.0
    block_size: float = 1.0  # metres; an instance is one xy column of the scene
    min_block_points: int = 16


class RobustBN(nn.BatchNorm1d):
    """RoTTA's robust BN on a BatchNorm1d (N, C) input; its ``momentum`` is RoTTA's alpha."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            b_var, b_mean = torch.var_mean(x, dim=0, unbiased=False)
            mean = (1 - self.momentum) * self.running_mean + self.momentum * b_mean
            var = (1 - self.momentum) * self.running_var + self.momentum * b_var
            with torch.no_grad():
                self.running_mean.copy_(mean)
                self.running_var.copy_(var)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def use_robust_bn(model: nn.Module, alpha: float) -> None:
    """Turn every BatchNorm1d of ``model`` into a RobustBN in place (same parameters and buffers)."""
    for m in model.modules():
        if isinstance(m, BN):
            if not isinstance(m, nn.BatchNorm1d):
                raise BenchError(f"rotta: robust BN is defined here for BatchNorm1d only, not {type(m).__name__}")
            m.__class__ = RobustBN
            m.momentum = alpha


@dataclass
class Instance:
    coord: torch.Tensor
    feat: torch.Tensor
    uncertainty: float
    age: int = 0


class CSTU:
    """Category-balanced memory with timeliness and uncertainty (official eviction rule)."""

    def __init__(self, capacity: int, num_class: int, lambda_t: float, lambda_u: float):
        self.capacity, self.num_class = capacity, num_class
        self.per_class = capacity / num_class
        self.lambda_t, self.lambda_u = lambda_t, lambda_u
        self.data: list[list[Instance]] = [[] for _ in range(num_class)]

    def score(self, age: int, uncertainty: float) -> float:
        return (self.lambda_t / (1 + math.exp(-age / self.capacity))
                + self.lambda_u * uncertainty / math.log(self.num_class))

    def occupancy(self) -> int:
        return sum(len(d) for d in self.data)

    def add(self, item: Instance, cls: int) -> None:
        if self._make_room(cls, self.score(0, item.uncertainty)):
            self.data[cls].append(item)
        for d in self.data:
            for it in d:
                it.age += 1

    def _make_room(self, cls: int, new_score: float) -> bool:
        if len(self.data[cls]) < self.per_class:
            if self.occupancy() < self.capacity:
                return True
            most = max(len(d) for d in self.data)
            return self._evict([c for c in range(self.num_class) if len(self.data[c]) == most], new_score)
        return self._evict([cls], new_score)

    def _evict(self, classes: list[int], new_score: float) -> bool:
        best = None  # (score, class, index); ties go to the later item, as the official ">="
        for c in classes:
            for i, it in enumerate(self.data[c]):
                s = self.score(it.age, it.uncertainty)
                if best is None or s >= best[0]:
                    best = (s, c, i)
        if best is None:
            return True
        if best[0] > new_score:
            self.data[best[1]].pop(best[2])
            return True
        return False

    def items(self) -> list[Instance]:
        return [it for d in self.data for it in d]


def blocks(batch: PointBatch, size: float, min_points: int) -> list[torch.Tensor]:
    """Point indices of each xy column of side ``size`` (per scene, grid order) with enough points."""
    out = []
    for s in range(batch.num_scenes):
        idx = (batch.batch == s).nonzero().flatten()
        xy = batch.coord[idx, :2]
        cell = ((xy - xy.min(0).values) / size).floor().long()
        key = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
        uniq, inv = torch.unique(key, return_inverse=True)
        for k in range(len(uniq)):
            sel = idx[inv == k]
            if len(sel) >= min_points:
                out.append(sel)
    return out


@METHODS.register("rotta", config=RoTTAConfig)
class RoTTA(Method):
    """memory bank of point blocks (class-balanced, timeliness), robust BN, EMA teacher, age-weighted loss"""

    def __init__(self, model, cfg: RoTTAConfig):
        use_robust_bn(model, cfg.alpha)
        super().__init__(model, cfg)
        self.on_reset()

    def adapt_params(self):
        return bn_affine_params(self.model)

    def on_reset(self):
        self.teacher = copy.deepcopy(self.model)
        self.teacher.requires_grad_(False)
        self.memory = CSTU(self.cfg.memory_size, self.model.spec.num_classes, self.cfg.lambda_t, self.cfg.lambda_u)
        self.seen = 0

    def adapt(self, inp):
        set_bn_mode(self.teacher, "source")
        with torch.no_grad():
            out = self.teacher(inp.batch)["seg"]
            prob = out.softmax(1)
            label = prob.argmax(1)
            ent = -(prob * torch.log(prob + 1e-6)).sum(1)
        self.last_output = out
        steps = 0
        for sel in blocks(inp.batch, self.cfg.block_size, self.cfg.min_block_points):
            cls = int(torch.bincount(label[sel], minlength=prob.shape[1]).argmax())
            item = Instance(inp.batch.coord[sel].clone(), inp.batch.feat[sel].clone(), float(ent[sel].mean()))
            self.memory.add(item, cls)
            self.seen += 1
            if self.seen % self.cfg.update_frequency == 0:
                steps += self._update(inp.generator)
        return steps

    def _update(self, g: torch.Generator) -> int:
        items = self.memory.items()
        if not items:
            return 0
        bank = PointBatch(torch.cat([it.coord for it in items]), torch.cat([it.feat for it in items]),
                          torch.cat([torch.full((len(it.coord),), i, dtype=torch.long) for i, it in enumerate(items)])
                          .to(items[0].coord.device), len(items))
        strong = augment_batch(bank, self.model.spec.features, g)
        set_bn_mode(self.teacher, "test")  # train mode: RBN statistics move
        set_bn_mode(self.model, "test")
        with torch.no_grad():
            t_prob = self.teacher(bank)["seg"].softmax(1)
        logp = self.model(strong)["seg"].log_softmax(1)
        ce = -(t_prob * logp).sum(1)
        per_block = torch.zeros(len(items), device=ce.device).index_add_(0, bank.batch, ce)
        per_block = per_block / torch.bincount(bank.batch, minlength=len(items)).to(ce)
        age = torch.tensor([it.age / self.cfg.memory_size for it in items], device=ce.device)
        weight = torch.exp(-age) / (1 + torch.exp(-age))
        self.step((per_block * weight).mean())
        set_bn_mode(self.model, "source")
        set_bn_mode(self.teacher, "source")
        with torch.no_grad():
            for tp, p in zip(self.teacher.parameters(), self.model.parameters()):
                tp.mul_(1 - self.cfg.nu).add_(self.cfg.nu * p)
        return 1

    @torch.no_grad()
    def predict(self, inp):
        set_bn_mode(self.teacher, "source")
        return self.teacher(inp.batch)["seg"]
