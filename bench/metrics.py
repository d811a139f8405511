"""Confusion matrices and IoU.

mIoU of a cell comes from one confusion matrix accumulated over all points of all its test scenes.
Points labelled ignore (-1) and points whose true class is not among the evaluated classes are left
out. A class enters the mean only if it is evaluated and occurs in the ground truth or the
prediction of the points counted (a class absent from both has an undefined IoU, 0/0, and is
excluded, not counted as 0 or 1). Per-scene mIoU follows the same rule on that scene alone.
"""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, label: np.ndarray, num_classes: int,
              classes: tuple[int, ...] | None = None) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = truth, columns = prediction."""
    pred, label = np.asarray(pred).reshape(-1), np.asarray(label).reshape(-1)
    valid = label >= 0
    if classes is not None:
        keep = np.zeros(num_classes, dtype=bool)
        keep[list(classes)] = True
        valid &= keep[np.clip(label, 0, num_classes - 1)]
    idx = label[valid] * num_classes + pred[valid]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN where the class is in neither truth nor prediction."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def miou(conf: np.ndarray, classes: tuple[int, ...] | None = None) -> float:
    iou = iou_per_class(conf)
    if classes is not None:
        iou = iou[list(classes)]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")
