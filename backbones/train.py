"""Training recipes (``source``, ``joint-kd``, ``joint-mae``) with standard 3D augmentations.

Each step takes a few training scenes, augments them (rotation about z, scaling, flips, jitter,
colour jitter; point order is kept so lifted teacher features stay attached), and minimises
cross-entropy plus the recipe's auxiliary loss: distillation of the lifted 2D teacher features
through the 2D-feature projector (``joint-kd``, the TTT-KD joint training) or reconstruction of the
input features of masked blocks through the reconstruction head (``joint-mae``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from backbones.batch import PointBatch, feature_slices, make_batch, scene_features
from backbones.losses import block_mask, class_weights, distill_loss, lovasz_softmax, masked_input, reconstruction_loss
from backbones.model import SegModel
from backbones.registry import RECIPES
from bench.data.classes import NUM_CLASSES
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.metrics import confusion, miou
from bench.params import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Check, Checked, one_of
from bench.progress import progress, track

log = logging.getLogger(__name__)

TeacherFn = Callable[[Scene], tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainConfig(Checked):
    CHECKS: ClassVar[dict[str, Check]] = {
        "epochs": AT_LEAST_1, "lr": POSITIVE, "weight_decay": AT_LEAST_0, "scenes_per_step": AT_LEAST_1,
        "kd_weight": AT_LEAST_0, "kd_loss": one_of("cosine", "l2"), "mae_weight": AT_LEAST_0, "mae_ratio": UNIT,
        "mae_cell": POSITIVE, "grad_clip": POSITIVE, "class_weight_power": AT_LEAST_0, "lovasz_weight": AT_LEAST_0,
    }
    epochs: int = 20
    lr: float = 0.01
    weight_decay: float = 1e-4
    scenes_per_step: int = 2
    kd_weight: float = 0.0
    kd_loss: str = "cosine"
    mae_weight: float = 0.0
    mae_ratio: float = 0.5
    mae_cell: float = 0.4
    augment: bool = True
    grad_clip: float = 10.0
    class_weight_power: float = 0.5  # cross-entropy class weights freq ** -power (0 = unweighted)
    lovasz_weight: float = 1.0  # weight of the Lovasz-softmax term beside the cross-entropy


Trainer = Callable[..., dict]


def trainer(cfg: TrainConfig) -> Trainer:
    """``train`` with the recipe's settings bound: ``trainer(model, train_scenes, val_scenes, seed, device,
    teacher_fn=None, desc="train")``."""

    def run(model: SegModel, train_scenes: list[Scene], val_scenes: list[Scene], seed: int, device,
            teacher_fn: TeacherFn | None = None, desc: str = "train") -> dict:
        return train(model, cfg, train_scenes, val_scenes, seed, device, teacher_fn, desc)

    return run


# A recipe declares whether its model trains with a teacher (a 2D-feature projector head, lifted
# teacher features per training scene) and with a reconstruction head; its factory returns the trainer.
@RECIPES.register("source", config=TrainConfig, teacher=False, mae=False)
def _source(*, cfg: TrainConfig) -> Trainer:
    """segmentation loss only (the Source-Only model)"""
    return trainer(cfg)


@dataclass
class JointKDConfig(TrainConfig):
    kd_weight: float = 1.0


@RECIPES.register("joint-kd", config=JointKDConfig, teacher=True, mae=False)
def _joint_kd(*, cfg: JointKDConfig) -> Trainer:
    """segmentation + distillation of lifted 2D teacher features (TTT-KD's joint training)"""
    return trainer(cfg)


@dataclass
class JointMAEConfig(TrainConfig):
    mae_weight: float = 1.0


@RECIPES.register("joint-mae", config=JointMAEConfig, teacher=False, mae=True)
def _joint_mae(*, cfg: JointMAEConfig) -> Trainer:
    """segmentation + masked-point reconstruction (for TTT-MAE)"""
    return trainer(cfg)


def augment(scene: Scene, feat: np.ndarray, features: tuple[str, ...], rng: np.random.Generator):
    """Rotated/scaled/flipped/jittered coordinates and colour-jittered features of one scene."""
    a = rng.uniform(0, 2 * math.pi)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=np.float32)
    flip = np.diag([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0]).astype(np.float32)
    m = r @ flip
    coord = (scene.coord - scene.coord.mean(0)) @ m.T * rng.uniform(0.9, 1.1)
    coord = coord + rng.normal(0, 0.005, coord.shape)
    feat = feat.copy()
    sl = feature_slices(features)
    if "color" in sl:
        c = (feat[:, sl["color"]] + 1) / 2
        c = c * rng.uniform(0.8, 1.2, 3) * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1, 3)
        feat[:, sl["color"]] = np.clip(c, 0, 1) * 2 - 1
    if "normal" in sl:
        feat[:, sl["normal"]] = feat[:, sl["normal"]] @ m.T
    return coord.astype(np.float32), feat.astype(np.float32)


@torch.no_grad()
def evaluate(model: SegModel, scenes: list[Scene], device, classes: tuple[int, ...] | None = None) -> float:
    model.eval()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for s in scenes:
        b = make_batch([s], model.spec.features).to(device)
        pred = model(b)["seg"].argmax(1).cpu().numpy()
        conf += confusion(pred, s.label, NUM_CLASSES, classes)
    return miou(conf, classes)


@dataclass
class Step:
    """What one training step's loss sees: the (augmented) batch, its labels, the scenes' indices into the
    training set, the lifted teacher features and their masks of those scenes (when the recipe trains with
    a teacher), the step's random generator and the class weights of the cross-entropy."""

    batch: PointBatch
    label: torch.Tensor
    idx: np.ndarray
    teacher: tuple[torch.Tensor, torch.Tensor] | None
    gen: torch.Generator
    class_weight: torch.Tensor | None


# A loss hook: (model, cfg, step) -> (loss, {name: value} of extra terms to log per epoch).
LossFn = Callable[[SegModel, "TrainConfig", Step], tuple[torch.Tensor, dict[str, float]]]


def segmentation_loss(logits: torch.Tensor, step: Step, cfg: TrainConfig) -> torch.Tensor:
    """Cross-entropy (class-weighted by ``class_weight_power``) plus ``lovasz_weight`` x Lovasz-softmax."""
    loss = F.cross_entropy(logits, step.label, weight=step.class_weight, ignore_index=-1)
    if cfg.lovasz_weight > 0:
        loss = loss + cfg.lovasz_weight * lovasz_softmax(logits, step.label)
    return loss


def recipe_loss(model: SegModel, cfg: TrainConfig, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of the ``source``, ``joint-kd`` and ``joint-mae`` recipes: segmentation, plus distillation of
    the lifted teacher features (``kd_weight``), plus reconstruction of masked blocks (``mae_weight``; the
    reconstruction branch sees the masked input, segmentation the full one)."""
    heads = ("seg",) + (("kd",) if cfg.kd_weight > 0 else ())
    out = model(step.batch, heads)
    loss = segmentation_loss(out["seg"], step, cfg)
    terms = {}
    if cfg.kd_weight > 0:
        kd = distill_loss(out["kd"], step.teacher[0], step.teacher[1], cfg.kd_loss)
        loss, terms["kd"] = loss + cfg.kd_weight * kd, kd.item()
    if cfg.mae_weight > 0:
        mask = block_mask(step.batch, cfg.mae_ratio, cfg.mae_cell, step.gen)
        rec = reconstruction_loss(model(masked_input(step.batch, mask), ("mae",))["mae"], step.batch, mask)
        loss, terms["mae"] = loss + cfg.mae_weight * rec, rec.item()
    return loss, terms


def uses_teacher(cfg: TrainConfig) -> bool:
    return cfg.kd_weight > 0 or getattr(cfg, "seg2d_weight", 0) > 0


def train(model: SegModel, cfg: TrainConfig, train_scenes: list[Scene], val_scenes: list[Scene], seed: int,
          device, teacher_fn: TeacherFn | None = None, desc: str = "train", loss_fn: LossFn = recipe_loss,
          epoch_callback: Callable[[int, SegModel], None] | None = None) -> dict:
    """Train ``model`` in place with ``loss_fn`` (the recipe's loss hook; every recipe shares this loop: data
    order, augmentation, AdamW with a one-cycle schedule, gradient clipping); returns a summary (seconds,
    final validation mIoU, per-epoch history of the loss, its extra terms and the validation mIoU).
    ``epoch_callback(epoch, model)`` runs after each epoch (learning curves)."""
    if uses_teacher(cfg) and teacher_fn is None:
        raise BenchError(f"{desc}: this recipe trains on lifted teacher features; the cell must name a teacher")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    features = model.spec.features
    feats = [scene_features(s, features) for s in train_scenes]
    targets = ([teacher_fn(s) for s in track(train_scenes, f"{desc}: teacher features")]
               if uses_teacher(cfg) else None)
    cw = (class_weights([s.label for s in train_scenes], NUM_CLASSES, cfg.class_weight_power).to(device)
          if cfg.class_weight_power > 0 else None)
    steps_per_epoch = max(1, math.ceil(len(train_scenes) / cfg.scenes_per_step))
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    t0, history = time.perf_counter(), []
    with progress() as bar:
        task = bar.add_task(desc, total=total, info="")
        for epoch in range(cfg.epochs):
            model.train()
            order = rng.permutation(len(train_scenes))
            losses, terms = [], defaultdict(list)
            for i in range(steps_per_epoch):
                idx = order[i * cfg.scenes_per_step:(i + 1) * cfg.scenes_per_step]
                if len(idx) == 0:
                    continue
                chosen = [train_scenes[j] for j in idx]
                if cfg.augment:
                    aug = [augment(train_scenes[j], feats[j], features, rng) for j in idx]
                    batch = make_batch(chosen, features, [a[0] for a in aug], [a[1] for a in aug])
                else:
                    batch = make_batch(chosen, features, feats=[feats[j] for j in idx])
                label = torch.from_numpy(np.concatenate([s.label for s in chosen])).to(device)
                teacher = None
                if targets is not None:
                    teacher = (torch.from_numpy(np.concatenate([targets[j][0] for j in idx])).float().to(device),
                               torch.from_numpy(np.concatenate([targets[j][1] for j in idx])).to(device))
                step = Step(batch.to(device), label, idx, teacher, gen, cw)
                loss, extra = loss_fn(model, cfg, step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                losses.append(loss.item())
                for k, v in extra.items():
                    terms[k].append(v)
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.3f}")
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                     **{f"loss_{k}": float(np.mean(v)) for k, v in terms.items()}}
            if val_scenes:
                entry["val_miou"] = evaluate(model, val_scenes, device)
                log.info("%s epoch %d/%d loss %.4f val mIoU %.4f", desc, epoch + 1, cfg.epochs, entry["loss"],
                         entry["val_miou"])
            else:
                log.info("%s epoch %d/%d loss %.4f", desc, epoch + 1, cfg.epochs, entry["loss"])
            history.append(entry)
            if epoch_callback is not None:
                epoch_callback(epoch + 1, model)
                model.train()
    model.eval()
    return {"train_seconds": time.perf_counter() - t0, "val_miou": history[-1].get("val_miou", float("nan")),
            "final_loss": history[-1]["loss"], "history": history}
