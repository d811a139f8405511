"""``adacontrast``: Contrastive Test-Time Adaptation (Chen et al., CVPR 2022, "Contrastive Test-Time
Adaptation"; official code DianCh/AdaContrast, and its online test-time version in
mariodoebler/test-time-adaptation, ``methods/adacontrast.py``, which this follows).

What a sample is in 3D: a *point*. A scene is one batch; per step ``samples`` points (default 1024)
are drawn uniformly from the scene with the scene's generator and act as the batch of samples for
every loss, the pseudo-labels and the memories, while the network always sees the whole scene (its
BN statistics and convolutions need the scene). A point's feature is the backbone's output for it
(``out["feat"]``: on SpUNet its voxel's feature), the analogue of the image feature before the
classifier; the label head is the classifier.

Per step, as the online official version:
1. Three views of the scene, all from the scene's generator in this order: weak ``w``, strong ``q``,
   strong ``k`` (``augment_batch`` with strength ``weak`` and 1.0: rotation about z, scale, jitter,
   colour; point order is kept, so the same point in two views is a positive pair). The image
   version uses crop/flip (weak) and MoCo-v2 colour/blur/grey augmentations (strong).
2. Student forward on ``w``: features and logits of the samples. Pseudo-labels: the argmax of the
   softmax until the pseudo-label bank holds ``warmup_samples`` samples (official: 1024), then
   soft kNN voting: the mean of the bank's stored probabilities over the ``num_neighbors`` (10)
   bank entries nearest in cosine distance, and its argmax.
3. Student forward on ``q``; the momentum (key) encoder first moves towards the student
   (EMA ``momentum``), then encodes ``k``; the contrastive logits are [q.k, q.queue] / T over the
   MoCo queue of ``queue_size`` L2-normalised key features (initialised random with random labels,
   as the official code); the keys and their pseudo-labels then enter the queue (FIFO); the
   class-aware InfoNCE masks queue entries whose (updated) label equals the sample's pseudo-label.
4. Loss = alpha * CE(student logits on q, pseudo-labels) + beta * InfoNCE + eta * diversity, where
   diversity = sum p_mean log p_mean of the mean softmax over the samples on ``q`` (the negative
   entropy of the mean prediction); one SGD step (nesterov, momentum 0.9, weight decay 1e-4, the
   label head at 10x lr, as the official optimizer).
5. The momentum encoder encodes ``w`` again; its features and softmax enter the pseudo-label bank
   (``queue_size`` entries, filled then FIFO).
BN: every forward (student and momentum encoder) runs in BN-train mode (batch statistics, running
statistics updated with the layers' own momentum), as the official ``model.train()``; the
prediction is a separate forward of the student in eval mode (running statistics) on the
unaugmented scene, as the official online version, so ``last_output`` is None (the adapting
forwards see augmented views).

Defaults from the official code: queue 16384, T 0.07, key momentum 0.999, 10 neighbours, cosine
distance, alpha = beta = eta = 1, class-aware contrast, CE on the strong view, SGD nesterov,
momentum 0.9, weight decay 1e-4, head 10x lr, lr 2e-4 (its VisDA-C target lr). Deviations: a
constant lr (the offline official version decays it over epochs; there are no epochs online);
1024 point-samples per scene (our choice: the InfoNCE logits are samples x queue, 1024 x 16384
floats per step); online over the stream, one step per scene.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.params import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Check
from methods.augment import augment_batch
from methods.base import BN, Method, MethodConfig, set_bn_mode
from methods.registry import METHODS


@dataclass
class AdaContrastConfig(MethodConfig):
    SEARCH: ClassVar[dict[str, tuple]] = {"lr": (2e-5, 2e-4, 2e-3), "steps": (1, 2)}
    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": AT_LEAST_0, "weight_decay": AT_LEAST_0, "head_lr_mult": AT_LEAST_0, "momentum": UNIT,
        "temperature": POSITIVE, "queue_size": AT_LEAST_1, "num_neighbors": AT_LEAST_1, "warmup_samples": AT_LEAST_0,
        "samples": AT_LEAST_1, "weak": UNIT, "alpha": AT_LEAST_0, "beta": AT_LEAST_0, "eta": AT_LEAST_0,
    }
    episodic: bool = False
    steps: int = 1
    lr: float = 2e-4
    optimizer: str = "sgd"  # sgd (nesterov, momentum 0.9) as the official code; or adam
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0  # the label head's lr relative to the backbone's
    momentum: float = 0.999  # EMA of the key (momentum) encoder
    temperature: float = 0.07
    queue_size: int = 16384  # MoCo queue and pseudo-label bank
    num_neighbors: int = 10
    warmup_samples: int = 1024  # argmax pseudo-labels until the bank holds this many samples
    samples: int = 1024  # points per scene that act as the batch of samples
    weak: float = 0.25  # strength of the weak augmentation (strong = 1.0)
    alpha: float = 1.0  # pseudo-label cross-entropy
    beta: float = 1.0  # contrastive (InfoNCE)
    eta: float = 1.0  # diversity


def train_bn(model: torch.nn.Module) -> None:
    """BN-train mode with the layers' own momentum (as ``model.train()`` would set, norm layers only)."""
    for m in model.modules():
        if isinstance(m, BN):
            m.train()
            m.track_running_stats = True


@METHODS.register("adacontrast", config=AdaContrastConfig)
class AdaContrast(Method):
    """contrastive TTA: kNN soft-voted pseudo-labels, MoCo queue, momentum encoder, diversity"""

    def adapt_params(self):
        return list(self.model.backbone.parameters()) + list(self.model.heads["seg"].parameters())

    def make_optimizer(self, params):
        n_backbone = len(list(self.model.backbone.parameters()))
        groups = [{"params": params[:n_backbone], "lr": self.cfg.lr},
                  {"params": params[n_backbone:], "lr": self.cfg.lr * self.cfg.head_lr_mult}]
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.lr, momentum=0.9, nesterov=True,
                                   weight_decay=self.cfg.weight_decay)
        return torch.optim.Adam(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)  # CHECKS: sgd or adam

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.on_reset()

    def on_reset(self):
        self.key_model = copy.deepcopy(self.model)
        self.key_model.requires_grad_(False)
        self.queue_feat: torch.Tensor | None = None  # (D, K) normalised keys
        self.queue_label: torch.Tensor | None = None  # (K,)
        self.queue_ptr = 0
        self.bank_feat: torch.Tensor | None = None  # (<=K, D)
        self.bank_prob: torch.Tensor | None = None  # (<=K, C)
        self.bank_ptr = 0
        self.seen = 0  # samples whose pseudo-labels were argmax (warm-up)

    def _key_params(self):
        return list(self.key_model.backbone.parameters()) + list(self.key_model.heads["seg"].parameters())

    def _init_queue(self, dim: int, device, g: torch.Generator) -> None:
        k, c = self.cfg.queue_size, self.model.spec.num_classes
        self.queue_feat = F.normalize(torch.randn(dim, k, generator=g), dim=0).to(device)
        self.queue_label = torch.randint(0, c, (k,), generator=g).to(device)

    @torch.no_grad()
    def _pseudo_labels(self, feat: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        if self.seen < self.cfg.warmup_samples or self.bank_feat is None:
            self.seen += feat.shape[0]
            return prob.argmax(1)
        dist = 1 - F.normalize(feat, dim=1) @ F.normalize(self.bank_feat, dim=1).T
        idx = dist.topk(min(self.cfg.num_neighbors, dist.shape[1]), dim=1, largest=False).indices
        return self.bank_prob[idx].mean(1).argmax(1)

    @torch.no_grad()
    def _update_bank(self, feat: torch.Tensor, prob: torch.Tensor) -> None:
        if self.bank_feat is None:
            self.bank_feat, self.bank_prob = feat[:0], prob[:0]
        if self.bank_feat.shape[0] < self.cfg.queue_size:
            self.bank_feat = torch.cat([self.bank_feat, feat])
            self.bank_prob = torch.cat([self.bank_prob, prob])
            self.bank_ptr = (self.bank_ptr + feat.shape[0]) % self.bank_feat.shape[0]
        else:
            size = self.bank_feat.shape[0]
            idx = torch.arange(self.bank_ptr, self.bank_ptr + feat.shape[0], device=feat.device) % size
            self.bank_feat[idx], self.bank_prob[idx] = feat, prob
            self.bank_ptr = (self.bank_ptr + feat.shape[0]) % self.bank_feat.shape[0]

    def adapt(self, inp):
        self.last_output = None
        feats = self.model.spec.features
        for _ in range(self.cfg.steps):
            g = inp.generator
            w = augment_batch(inp.batch, feats, g, self.cfg.weak)
            q_view = augment_batch(inp.batch, feats, g)
            k_view = augment_batch(inp.batch, feats, g)
            n = inp.batch.coord.shape[0]
            idx = torch.randperm(n, generator=g)[:self.cfg.samples].to(inp.batch.coord.device)
            train_bn(self.model)
            train_bn(self.key_model)
            out_w = self.model(w)
            feat_w, logits_w = out_w["feat"][idx], out_w["seg"][idx]
            if self.queue_feat is None:
                self._init_queue(feat_w.shape[1], feat_w.device, g)
            labels = self._pseudo_labels(feat_w.detach(), logits_w.detach().softmax(1))
            out_q = self.model(q_view)
            logits_q = out_q["seg"][idx]
            q = F.normalize(out_q["feat"][idx], dim=1)
            with torch.no_grad():
                for kp, p in zip(self._key_params(), self.params):
                    kp.mul_(self.cfg.momentum).add_((1 - self.cfg.momentum) * p)
                k = F.normalize(self.key_model(k_view)["feat"][idx], dim=1)
            logits_ins = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue_feat.clone()], 1)
            logits_ins = logits_ins / self.cfg.temperature
            # enqueue the keys and their pseudo-labels (before the class-aware mask, as the official code)
            kq = self.cfg.queue_size
            qidx = torch.arange(self.queue_ptr, self.queue_ptr + k.shape[0], device=k.device) % kq
            self.queue_feat[:, qidx] = k.T
            self.queue_label[qidx] = labels
            self.queue_ptr = (self.queue_ptr + k.shape[0]) % kq
            mask = torch.ones_like(logits_ins, dtype=torch.bool)
            mask[:, 1:] = labels[:, None] != self.queue_label[None]
            logits_ins = logits_ins.masked_fill(~mask, float("-inf"))
            loss_ins = F.cross_entropy(logits_ins, torch.zeros(k.shape[0], dtype=torch.long, device=k.device))
            loss_cls = F.cross_entropy(logits_q, labels)
            p_mean = logits_q.softmax(1).mean(0)
            loss_div = (p_mean * torch.log(p_mean + 1e-8)).sum()
            self.step(self.cfg.alpha * loss_cls + self.cfg.beta * loss_ins + self.cfg.eta * loss_div)
            with torch.no_grad():
                out_kw = self.key_model(w)
                self._update_bank(out_kw["feat"][idx], out_kw["seg"][idx].softmax(1))
        set_bn_mode(self.model, "source")
        return self.cfg.steps
