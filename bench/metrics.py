"""Confusion matrices, IoU and calibration error.

Scoring rule ("score what exists"): mIoU of a set of points comes from one confusion matrix
accumulated over them (rows = truth, columns = prediction). Points labelled ignore (-1) and points
whose true class is not among the evaluated classes are left out. A class is *scored* only if it is
evaluated and has at least one ground-truth point among the points counted; mIoU is the mean IoU of
the scored classes. A class absent from the ground truth is not scored even when it is predicted
(its stray predictions still cost the IoU of the classes those points really belong to).

The same rule applies to every set of points, so:

* a cell's mIoU (one confusion matrix over all test scenes of its stream) scores the classes that
  occur in that stream's test scenes: a class the target does not have is not scored for it;
* a scene's mIoU scores the classes that occur in that scene (a class of the target that the scene
  lacks is left out of that scene's mean, not counted as 0 for a few stray predictions);
* a bootstrap resample of scenes scores the classes that occur in the resample.

``iou_per_class`` is NaN for a class without ground-truth points. The calibration error
(``ece``) pools equal-width histograms of the maximum softmax probability.
"""

from __future__ import annotations

import numpy as np

CALIB_BINS = 15  # equal-width bins of the maximum softmax probability over [0, 1]


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


def scored(conf: np.ndarray, classes: tuple[int, ...] | None = None) -> np.ndarray:
    """Boolean mask of the scored classes: evaluated (in ``classes``, all when None) and with at least
    one ground-truth point in ``conf``."""
    conf = np.asarray(conf)
    mask = conf.sum(1) > 0
    if classes is not None:
        keep = np.zeros(conf.shape[0], dtype=bool)
        keep[list(classes)] = True
        mask &= keep
    return mask


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN where the class has no ground-truth point (not scored)."""
    conf = np.asarray(conf)
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1).astype(np.float64)
    denom = conf.sum(0) + gt - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gt > 0, tp / np.maximum(denom, 1), np.nan)


def miou(conf: np.ndarray, classes: tuple[int, ...] | None = None) -> float:
    """Mean IoU over the scored classes (see the module docstring); NaN when none is scored."""
    iou = iou_per_class(conf)[scored(conf, classes)]
    return float(iou.mean()) if len(iou) else float("nan")


def accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def ece(count: np.ndarray, conf_sum: np.ndarray, correct: np.ndarray) -> float:
    """Expected calibration error of pooled histograms over equal-width confidence bins:
    sum over bins of |sum of confidences - number correct| / number of points. ``count``: points per
    bin, ``conf_sum``: sum of their maximum softmax probabilities, ``correct``: how many of them were
    predicted right. NaN without points."""
    count, conf_sum, correct = (np.asarray(x, dtype=np.float64) for x in (count, conf_sum, correct))
    n = count.sum()
    return float(np.abs(conf_sum - correct).sum() / n) if n > 0 else float("nan")
