"""Open-set mode: classes held out of source training, kept in the target scenes.

A grid's ``holdout_classes = ["sofa", ...]`` (class names of ``bench.data.classes.CLASSES``) makes every
cell of the grid open-set:

* **Training.** The source model never learns the held-out classes: their points are relabelled
  ignore (-1) in the training and validation scenes (``hold_out``), so the training loss (cross-entropy
  and Lovasz-softmax, ``ignore_index = -1``) never sees them as targets. The label head keeps its
  ``NUM_CLASSES`` outputs; the held-out outputs only receive gradients that push them down. The
  held-out classes are part of the model's identity (``bench.spec.Cell.model_identity``), so these
  models are not the shipped ones: each is trained on first use and kept in the checkpoint cache.
* **Known-class mIoU.** The target scenes keep their labels. ``miou`` (and ``miou_known``) of an
  open-set row is scored on the *known* classes only (the pair's evaluated classes minus the held-out
  ones) over the points labelled with a known class; points of a held-out class are left out of the
  confusion matrix (they enter the detection scores below). A known point predicted as a held-out
  class still counts against its true class.
* **Unknown-point detection.** Each point gets an unknown score; the default (and only) score is
  ``1 - MSP``, one minus the maximum softmax probability of the row's prediction (Hendrycks & Gimpel
  2017). Positives are the points labelled with a held-out class, negatives the points labelled with a
  known class; ``auroc_unknown`` is the area under the ROC curve (ties counted half), and
  ``fpr95_unknown`` the share of known points whose score reaches the threshold at which 95 % of the
  unknown points are flagged (the largest threshold with TPR >= 0.95). Per scene where the scene has
  both kinds of points (else NaN), and per cell over the pooled points of the stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.errors import BenchError

SCORE = "1 - MSP"  # the documented unknown score
TPR = 0.95


def parse_holdout(v: Any, where: str) -> tuple[str, ...]:
    """``holdout_classes`` as a tuple of class names in class-id order; a BenchError names a bad value."""
    from bench.data.classes import CLASS_ID, CLASSES

    if v is None or v == []:
        return ()
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise BenchError(f"{where}: holdout_classes = {v!r} must be a list of class names, e.g. [\"sofa\"]")
    bad = [c for c in v if c not in CLASS_ID]
    if bad:
        raise BenchError(f"{where}: holdout_classes: unknown class(es) {', '.join(map(repr, bad))}; valid: "
                         f"{', '.join(CLASSES)}")
    if len(set(v)) != len(v):
        raise BenchError(f"{where}: holdout_classes = {v!r} lists a class twice")
    if len(v) >= len(CLASSES) - 1:
        raise BenchError(f"{where}: holdout_classes = {v!r} leaves fewer than two known classes")
    return tuple(sorted(v, key=CLASS_ID.__getitem__))


def class_ids(names: tuple[str, ...]) -> tuple[int, ...]:
    from bench.data.classes import CLASS_ID

    return tuple(CLASS_ID[c] for c in names)


def hold_out(label: np.ndarray, held: tuple[int, ...]) -> np.ndarray:
    """A copy of ``label`` with the points of the ``held`` class ids set to ignore (-1)."""
    out = np.array(label, dtype=np.int64, copy=True)
    if held:
        out[np.isin(out, held)] = -1
    return out


def held_out_scenes(scenes: list, held: tuple[int, ...]) -> list:
    """Copies of ``scenes`` whose points of the ``held`` classes are labelled ignore (what source training
    and its validation see in open-set mode); the scenes themselves are not changed."""
    import dataclasses

    return [dataclasses.replace(s, label=hold_out(s.label, held)) for s in scenes] if held else list(scenes)


def unknown_score(prob_max: np.ndarray) -> np.ndarray:
    """The unknown score of points from their maximum softmax probability: ``1 - MSP``."""
    return 1.0 - np.asarray(prob_max, dtype=np.float64)


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` separating ``positive`` points from the others: the
    probability that a random positive scores above a random negative, ties counted half (the
    Mann-Whitney statistic from average ranks). NaN without a positive or without a negative."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks (1-based) over runs of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fpr_at_tpr(score: np.ndarray, positive: np.ndarray, tpr: float = TPR) -> float:
    """False-positive rate at the largest threshold ``t`` that flags (``score >= t``) at least ``tpr`` of
    the positives: the share of negatives with ``score >= t``. NaN without a positive or a negative."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == len(s):
        return float("nan")
    k = int(np.ceil(tpr * n_pos - 1e-9))  # positives that must be flagged
    t = np.sort(s[pos])[::-1][k - 1]  # the k-th highest positive score
    return float(np.mean(s[~pos] >= t))


def detection(prob_max: np.ndarray, label: np.ndarray, known: tuple[int, ...], held: tuple[int, ...]) -> dict:
    """``auroc_unknown``, ``fpr95_unknown`` and ``n_unknown`` of one set of points: ``prob_max`` their
    maximum softmax probability, ``label`` their labels; points of another class or ignore are left out."""
    lab = np.asarray(label).reshape(-1)
    unknown = np.isin(lab, held)
    keep = unknown | np.isin(lab, known)
    score = unknown_score(np.asarray(prob_max).reshape(-1)[keep])
    return {"auroc_unknown": auroc(score, unknown[keep]), "fpr95_unknown": fpr_at_tpr(score, unknown[keep]),
            "n_unknown": int(unknown.sum())}


__all__ = ["SCORE", "auroc", "class_ids", "detection", "fpr_at_tpr", "hold_out", "held_out_scenes", "parse_holdout",
           "unknown_score"]
