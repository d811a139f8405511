"""The ``joint-kd2d`` recipe: ``joint-kd`` (segmentation + distillation of the lifted 2D teacher features)
plus a 2D segmentation branch, for the multi-modal methods (``xmuda``, ``mmtta``).

The 2D branch is the frozen 2D teacher followed by a trainable label head (``heads["seg2d"]``,
backbones/model.py) applied to the teacher's features; the harness lifts those features onto the
points (one feature vector per point seen by a view), so the 2D head is trained per point, with
cross-entropy against the point labels, on the seen points only. This is the 2D half of xMUDA's
two-stream network (Jaritz et al., CVPR 2020, valeoai/xmuda), where the 2D stream's pixel features
are sampled at the projected points and classified there; here the 2D feature extractor is the
frozen teacher (only its head trains), so the 2D branch costs nothing beyond the lifting TTT-KD
already does. The 3D side is exactly ``joint-kd``: the loss is

    CE(3D logits, y) + kd_weight * distill(kd projector, teacher features | seen)
                     + seg2d_weight * CE(2D logits | seen, y | seen)

with the augmentations, optimiser and schedule of ``backbones/train.py`` (point order is kept by
the augmentations, so lifted features stay attached). The 2D head receives the teacher features
unaugmented (the teacher saw the clean images).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from backbones.batch import make_batch, scene_features
from backbones.losses import distill_loss
from backbones.model import SegModel
from backbones.registry import RECIPES
from backbones.train import JointKDConfig, TeacherFn, Trainer, augment, evaluate
from bench.data.classes import NUM_CLASSES
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.metrics import confusion, miou
from bench.params import AT_LEAST_0, Check
from bench.progress import progress, track

log = logging.getLogger(__name__)


@dataclass
class JointKD2DConfig(JointKDConfig):
    CHECKS: ClassVar[dict[str, Check]] = {"seg2d_weight": AT_LEAST_0}
    seg2d_weight: float = 1.0  # weight of the 2D head's cross-entropy on the seen points


@RECIPES.register("joint-kd2d", config=JointKD2DConfig, teacher=True, mae=False)
def _joint_kd2d(*, cfg: JointKD2DConfig) -> Trainer:
    """joint-kd + a 2D label head on the lifted teacher features (for xMUDA / MM-TTA rows)"""

    def run(model: SegModel, train_scenes: list[Scene], val_scenes: list[Scene], seed: int, device,
            teacher_fn: TeacherFn | None = None, desc: str = "train") -> dict:
        return train_kd2d(model, cfg, train_scenes, val_scenes, seed, device, teacher_fn, desc)

    return run


def loss_kd2d(model: SegModel, batch, label: torch.Tensor, feat: torch.Tensor, mask: torch.Tensor,
              cfg: JointKD2DConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, 2D cross-entropy) of one step; a batch with no seen point gives a zero 2D term."""
    out = model(batch, ("seg", "kd"))
    loss = F.cross_entropy(out["seg"], label, ignore_index=-1)
    loss = loss + cfg.kd_weight * distill_loss(out["kd"], feat, mask, cfg.kd_loss)
    if bool(mask.any()):
        ce2d = F.cross_entropy(model.forward2d(feat[mask]), label[mask], ignore_index=-1)
    else:
        ce2d = out["seg"].sum() * 0.0
    return loss + cfg.seg2d_weight * ce2d, ce2d


@torch.no_grad()
def evaluate2d(model: SegModel, scenes: list[Scene], targets, device) -> float:
    """mIoU of the 2D head on the seen points of ``scenes`` (``targets``: their lifted features, masks)."""
    model.eval()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for s, (feat, mask) in zip(scenes, targets):
        if mask.any():
            pred = model.forward2d(torch.from_numpy(feat[mask]).float().to(device)).argmax(1).cpu().numpy()
            conf += confusion(pred, s.label[mask], NUM_CLASSES)
    return miou(conf)


def train_kd2d(model: SegModel, cfg: JointKD2DConfig, train_scenes: list[Scene], val_scenes: list[Scene], seed: int,
               device, teacher_fn: TeacherFn | None = None, desc: str = "train") -> dict:
    """Train ``model`` (with a 2D head) in place; the loop of ``backbones.train.train`` with the 2D term."""
    if teacher_fn is None:
        raise BenchError("recipe joint-kd2d trains on lifted teacher features; the cell must name a teacher")
    if "seg2d" not in model.heads:
        raise BenchError("recipe joint-kd2d needs a model with a 2D label head (ModelSpec.kd_dim > 0)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    features = model.spec.features
    feats = [scene_features(s, features) for s in train_scenes]
    targets = [teacher_fn(s) for s in track(train_scenes, f"{desc}: teacher features")]
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
            losses, losses2d = [], []
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
                batch = batch.to(device)
                label = torch.from_numpy(np.concatenate([s.label for s in chosen])).to(device)
                t = torch.from_numpy(np.concatenate([targets[j][0] for j in idx])).float().to(device)
                m = torch.from_numpy(np.concatenate([targets[j][1] for j in idx])).to(device)
                loss, ce2d = loss_kd2d(model, batch, label, t, m, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                losses.append(loss.item())
                losses2d.append(ce2d.item())
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.3f}")
            val = evaluate(model, val_scenes, device) if val_scenes else float("nan")
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "loss_2d": float(np.mean(losses2d)),
                            "val_miou": val})
            log.info("%s epoch %d/%d loss %.4f (2D CE %.4f) val mIoU %.4f", desc, epoch + 1, cfg.epochs,
                     np.mean(losses), np.mean(losses2d), val)
    model.eval()
    return {"train_seconds": time.perf_counter() - t0, "val_miou": history[-1]["val_miou"],
            "final_loss": history[-1]["loss"], "final_loss_2d": history[-1]["loss_2d"],
            "train_miou_2d": evaluate2d(model, train_scenes, targets, device), "history": history}
