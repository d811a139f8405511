"""Statistics over test scenes and seeds.

* ``bootstrap_ci``: percentile bootstrap of a cell's mIoU over its test scenes: resample scenes with
  replacement, sum their confusion matrices, recompute mIoU (the same estimator as the cell's mIoU).
* ``paired_test``: a method against Source-Only on the same scenes (same seed): Wilcoxon signed-rank
  test on per-scene mIoU differences (exact for small n; scipy). Returns the mean difference and p.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from bench.metrics import miou


def bootstrap_ci(confs: np.ndarray, classes: tuple[int, ...] | None, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """``confs``: (S, C, C) per-scene confusion matrices. Returns the (lo, hi) percentile interval."""
    s = confs.shape[0]
    if s == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = np.array([miou(confs[rng.integers(0, s, s)].sum(0), classes) for _ in range(n_boot)])
    return float(np.nanpercentile(vals, 100 * alpha / 2)), float(np.nanpercentile(vals, 100 * (1 - alpha / 2)))


def paired_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b and the two-sided Wilcoxon signed-rank p-value (1.0 when all differences are 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if len(d) == 0:
        return float("nan"), float("nan")
    if np.allclose(d, 0):
        return 0.0, 1.0
    return float(d.mean()), float(stats.wilcoxon(d).pvalue)
