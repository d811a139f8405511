"""Statistics over test scenes and seeds, used by the report and by ``bench compare``.

* ``miou_batch``: mIoU of many confusion matrices at once (the same rule as ``bench.metrics.miou``).
* ``bootstrap_miou``: a two-level bootstrap of a result's mIoU: resample seeds with replacement, and
  within them test scenes with replacement; per resampled seed the scenes' confusion matrices are
  summed and mIoU recomputed (the cell's own estimator), then averaged over the resampled seeds.
  ``bootstrap_ci`` turns it into a percentile interval.
* ``paired_test``: Wilcoxon signed-rank test on paired per-scene differences (two-sided or one-sided).
* ``holm``: Holm's step-down adjustment of a family of p-values.
* ``top_group``: the candidates not significantly worse than the best (one-sided paired Wilcoxon of
  the best against each other candidate, Holm-corrected over the candidates).
* ``mean_rank_bootstrap``: mean rank over columns with a bootstrap interval that resamples scenes and
  seeds within each column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.metrics import miou

ALPHA = 0.05
N_BOOT = 1000


def miou_batch(confs: np.ndarray, classes: tuple[int, ...] | None = None) -> np.ndarray:
    """``confs``: (..., C, C) confusion matrices -> (...) mIoU, NaN where no class is defined."""
    confs = np.asarray(confs, dtype=np.float64)
    tp = np.diagonal(confs, axis1=-2, axis2=-1)
    denom = confs.sum(-2) + confs.sum(-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    if classes is not None:
        iou = iou[..., list(classes)]
    defined = np.isfinite(iou)
    n = defined.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(defined, iou, 0.0).sum(-1) / np.maximum(n, 1), np.nan)


def _weights(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) multiplicities of a resample-with-replacement of n items."""
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(np.float64)


def bootstrap_miou(confs: np.ndarray, classes: tuple[int, ...] | None, n_boot: int = N_BOOT,
                   seed: int = 0) -> np.ndarray:
    """``confs``: (R, S, N, C, C): R results sharing S seeds and N scenes (paired: the same resampled
    seeds and scenes for every result). Returns (n_boot, R) bootstrap mIoU values."""
    confs = np.asarray(confs, dtype=np.float64)
    if confs.ndim == 4:
        confs = confs[None]
    _, s, n = confs.shape[:3]
    rng = np.random.default_rng(seed)
    w_seed, w_scene = _weights(rng, n_boot, s), _weights(rng, n_boot, n)
    out = []
    for lo in range(0, n_boot, 200):  # chunks keep memory small for many results
        summed = np.einsum("bn,rsnij->brsij", w_scene[lo:lo + 200], confs)  # (b, R, S, C, C)
        m = miou_batch(summed, classes)  # (b, R, S)
        ws = w_seed[lo:lo + 200][:, None, :]
        out.append(np.nansum(m * ws, -1) / np.maximum((ws * np.isfinite(m)).sum(-1), 1))
    return np.concatenate(out)


def bootstrap_ci(confs: np.ndarray, classes: tuple[int, ...] | None, n_boot: int = N_BOOT, alpha: float = ALPHA,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mIoU. ``confs``: (N, C, C) scenes of one seed or (S, N, C, C) seeds x scenes."""
    confs = np.asarray(confs)
    if confs.ndim == 3:
        confs = confs[None]
    if confs.shape[1] == 0:
        return float("nan"), float("nan")
    vals = bootstrap_miou(confs[None], classes, n_boot, seed)[:, 0]
    return float(np.nanpercentile(vals, 100 * alpha / 2)), float(np.nanpercentile(vals, 100 * (1 - alpha / 2)))


def paired_test(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> tuple[float, float]:
    """Mean of a - b over the pairs and the Wilcoxon signed-rank p-value (``alternative``: "two-sided"
    or "greater" = a tends to exceed b). p = 1 when every difference is 0, NaN without pairs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if len(d) == 0:
        return float("nan"), float("nan")
    if np.allclose(d, 0):
        return 0.0, 1.0
    return float(d.mean()), float(stats.wilcoxon(d, alternative=alternative).pvalue)


def holm(p: list[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (monotone, capped at 1); NaN entries stay NaN and do not count."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class Group:
    best: str
    members: frozenset[str]  # the best and every candidate not significantly worse than it
    p_holm: dict[str, float]  # per other candidate: Holm-adjusted one-sided p (best > candidate)


def top_group(means: dict[str, float], paired: dict[str, np.ndarray], alpha: float = ALPHA) -> Group:
    """``means``: candidate -> mean mIoU; ``paired``: candidate -> its per-scene mIoU over the same
    (seed, scene) pairs in the same order for every candidate. The best is the highest mean; a
    candidate stays in the group unless the one-sided Wilcoxon test of best > candidate rejects at
    ``alpha`` after Holm correction over the candidates."""
    best = max(means, key=lambda k: (means[k], k))
    others = [k for k in means if k != best]
    raw = [paired_test(paired[best], paired[k], "greater")[1] for k in others]
    adj = holm(raw)
    p = {k: float(v) for k, v in zip(others, adj)}
    members = {best} | {k for k in others if not (np.isfinite(p[k]) and p[k] < alpha)}
    return Group(best, frozenset(members), p)


def ranks(values: np.ndarray) -> np.ndarray:
    """Rank 1 = highest value, ties share their mean rank, along the last axis."""
    return stats.rankdata(-np.asarray(values), axis=-1, method="average")


def mean_rank_bootstrap(columns: list[tuple[list[str], np.ndarray, tuple[int, ...] | None]], n_boot: int = N_BOOT,
                        alpha: float = ALPHA, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``columns``: per column (names, confs (R, S, N, C, C), evaluated classes). Each result is
    ranked within each column; its mean rank is the mean over the columns it appears in. The interval
    comes from bootstrap resamples of seeds and scenes within each column (paired across results).
    Returns name -> (mean rank, lo, hi)."""
    point: dict[str, list[float]] = {}
    boot: dict[str, list[np.ndarray]] = {}
    for j, (names, confs, classes) in enumerate(columns):
        est = np.nanmean(miou_batch(np.asarray(confs, dtype=np.float64).sum(2), classes), -1)  # (R,)
        for name, r in zip(names, ranks(est)):
            point.setdefault(name, []).append(float(r))
        b = ranks(bootstrap_miou(confs, classes, n_boot, seed + j))  # (n_boot, R)
        for i, name in enumerate(names):
            boot.setdefault(name, []).append(b[:, i])
    out = {}
    for name, rs in point.items():
        bm = np.mean(boot[name], axis=0)
        out[name] = (float(np.mean(rs)), float(np.percentile(bm, 100 * alpha / 2)),
                     float(np.percentile(bm, 100 * (1 - alpha / 2))))
    return out


__all__ = ["ALPHA", "N_BOOT", "Group", "bootstrap_ci", "bootstrap_miou", "holm", "mean_rank_bootstrap", "miou",
           "miou_batch", "paired_test", "ranks", "top_group"]
