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

in the one training loop of ``backbones/train.py`` (its loss hook adds the 2D term; point order is kept by
the augmentations, so lifted features stay attached). The 2D head receives the teacher features
unaugmented (the teacher saw the clean images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from backbones.model import SegModel
from backbones.registry import RECIPES
from backbones.train import JointKDConfig, Step, TeacherFn, Trainer, recipe_loss, train
from bench.data.classes import NUM_CLASSES
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.metrics import confusion, miou
from bench.params import AT_LEAST_0, Check

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


def loss_kd2d(model: SegModel, cfg: JointKD2DConfig, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
    """The recipe's loss hook: ``joint-kd``'s loss plus the 2D head's cross-entropy on the seen points (a batch
    with no seen point gives a zero 2D term)."""
    loss, terms = recipe_loss(model, cfg, step)
    feat, mask = step.teacher
    if bool(mask.any()):
        ce2d = F.cross_entropy(model.forward2d(feat[mask]), step.label[mask], ignore_index=-1)
    else:
        ce2d = loss * 0.0
    terms["2d"] = ce2d.item()
    return loss + cfg.seg2d_weight * ce2d, terms


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
    """Train ``model`` (with a 2D head) in place: ``backbones.train.train`` with the 2D term as its loss hook."""
    if "seg2d" not in model.heads:
        raise BenchError("recipe joint-kd2d needs a model with a 2D label head (ModelSpec.kd_dim > 0)")
    if teacher_fn is None:
        raise BenchError("recipe joint-kd2d trains on lifted teacher features; the cell must name a teacher")
    cache: dict[str, tuple] = {}

    def teacher(s: Scene):
        if s.name not in cache:
            cache[s.name] = teacher_fn(s)
        return cache[s.name]

    info = train(model, cfg, train_scenes, val_scenes, seed, device, teacher, desc, loss_fn=loss_kd2d)
    info["final_loss_2d"] = info["history"][-1].get("loss_2d", float("nan"))
    info["train_miou_2d"] = evaluate2d(model, train_scenes, [teacher(s) for s in train_scenes], device)
    return info
