"""Statistics over independent units (scenes within streams, model seeds), used by the report, by
``bench compare`` and by ``bench select`` (the inert rule).

Units and resampling (``Design``)
---------------------------------
A result is a set of per-scene values, each keyed by (model seed, stream seed, scene). What is
independent decides how it is resampled:

* Scenes within a stream: each stream seed draws its own test scenes (protocol v3), so the scenes of
  all streams of one model are independent units. They are resampled with replacement *within each
  stream* (a stratified bootstrap: every stream keeps its number of scenes).
* Model seeds: when a result spans several source models (rows with several ``model_seed`` values;
  rows written before protocol v3 have none and trained one model per ``seed``), the model seeds are
  resampled with replacement first, and scenes within the streams of each drawn model (nested).
  With one model seed nothing is resampled at that level.
* Shared scenes: when one scene occurs in several streams (rows written before protocol v3 reused the
  same test scenes in every seed), the scenes are drawn once per resample and the same draw applies
  to every stream that holds them (a crossed design), so a scene never counts as several independent
  units.

Scenes of an online stream are dependent through the adapted state; resampling them treats the
stream's scenes as exchangeable (the order that ran is one draw). With few model seeds the
model-level resampling is coarse: 3 seeds give 10 distinct multisets, and (scene noise aside) the
centred one-sided p-value below is the share of multisets, weighted by their probability, whose
mean over models reaches twice the observed mean; so a difference of +5, +5 and -3 points over three
models is not significant (p ~ 0.3), while +5, +5 and -0.5 is. Read model-level p-values from fewer
than about ten model seeds as approximate.

The per-scene estimate of a result is the mean over model seeds of the mean over that model's scenes
(scenes of all its streams together); a resample weights both means by the drawn multiplicities.
The pooled estimate (the headline mIoU) is the mean over model seeds of the mean over their streams
of the stream's mIoU from its summed confusion matrices; a resample sums each stream's drawn scenes.

Tests
-----
The tests compare per-scene mIoU (``bench.metrics``: each scene scores the classes it has); the
headline the report shows is the pooled mIoU. Where the two order two rows differently the report
says so.

* ``paired_test``: paired bootstrap test of the mean per-scene difference a - b (per-scene mIoU of
  two rows on the same units), with the resampling above; the p-value is the centred bootstrap
  p-value (the distribution of d* - d stands for the null distribution of d): two-sided
  ``(1 + #{|d*_b - d| >= |d|}) / (B + 1)``, one-sided "greater" ``(1 + #{d*_b - d >= d}) / (B + 1)``.
  ``n_boot_for`` picks B so that a Holm-corrected family of m tests can reach alpha.
* ``holm``: Holm's step-down adjustment of a family of p-values.
* ``top_group``: the candidates not significantly worse than the best (highest headline mean): the
  one-sided paired bootstrap test of best > candidate, Holm-corrected over the candidates.
* ``bootstrap_miou`` / ``bootstrap_ci``: percentile interval of the pooled mIoU under the resampling.
* ``mean_rank_bootstrap``: mean rank over columns with a bootstrap interval (each column resampled
  on its own, paired across the rows of the column).
* ``inert``: the one rule for "no effect at these settings" (imported by the selection code).

Scoring stored results again by the current rule is ``bench.rescore``'s job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.metrics import miou

ALPHA = 0.05
N_BOOT = 1000  # resamples for intervals (of pooled mIoU and of mean ranks)
N_TEST = 10_000  # least resamples for a test's p-value (resolution 1 / (N_TEST + 1))
INERT_MARGIN = 0.001  # equivalence margin of the inert rule: 0.1 mIoU points, as a fraction
INERT_AGREE = 0.95  # share of points with identical predictions that makes a row inert


# ------------------------------------------------------------------------------------------- mIoU
def miou_batch(confs: np.ndarray, classes: tuple[int, ...] | None = None) -> np.ndarray:
    """``confs``: (..., C, C) confusion matrices -> (...) mIoU by ``bench.metrics.miou``'s rule (mean
    IoU over the evaluated classes with at least one ground-truth point); NaN where none is scored."""
    confs = np.asarray(confs, dtype=np.float64)
    tp = np.diagonal(confs, axis1=-2, axis2=-1)
    gt = confs.sum(-1)
    denom = confs.sum(-2) + gt - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(gt > 0, tp / np.maximum(denom, 1), np.nan)
    if classes is not None:
        iou = iou[..., list(classes)]
    defined = np.isfinite(iou)
    n = defined.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(defined, iou, 0.0).sum(-1) / np.maximum(n, 1), np.nan)


# ----------------------------------------------------------------------------------------- design
_WEIGHTS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
WEIGHT_CELLS = 4_000_000  # unit weights held at once (32 MB)


def _draw(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) multiplicities of n items drawn n times with replacement, per row."""
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _add_model(num: np.ndarray, den: np.ndarray, mean_m: np.ndarray, have: np.ndarray, w: np.ndarray) -> None:
    """Add one model seed's mean (where it has values) with its bootstrap weight ``w`` to the running
    weighted sum ``num`` and weight ``den`` (in place): the mean over model seeds of both estimates."""
    num += np.where(have, w * np.where(have, mean_m, 0.0), 0.0)
    den += np.where(have, w, 0.0)


@dataclass(frozen=True)
class Design:
    """The independence structure of U per-scene units: per unit the index of its model seed, of its
    stream and of its scene key (see the module docstring)."""

    model: np.ndarray  # (U,) model-seed index 0..M-1
    stream: np.ndarray  # (U,) stream index 0..S-1
    scene: np.ndarray  # (U,) scene-key index 0..K-1
    crossed: bool  # some scene key occurs in several streams: one scene draw shared by all streams

    @classmethod
    def from_keys(cls, model_seeds, seeds, scenes) -> Design:
        """Units keyed by model seed, stream seed and scene (a stream = (model seed, seed))."""
        model = pd.factorize(np.asarray([str(m) for m in model_seeds], dtype=object))[0]
        seed = pd.factorize(np.asarray([str(s) for s in seeds], dtype=object))[0]
        stream = pd.factorize(model * (int(seed.max()) + 1 if len(seed) else 1) + seed)[0]
        scene = pd.factorize(np.asarray([str(x) for x in scenes], dtype=object))[0]
        pairs = np.unique(np.stack([scene, stream]), axis=1) if len(scene) else np.zeros((2, 0), int)
        crossed = bool(len(pairs[0]) and np.bincount(pairs[0]).max() > 1)
        return cls(model, stream, scene, crossed)

    @classmethod
    def from_index(cls, index: pd.MultiIndex) -> Design:
        """From an index of (model_seed, seed, scene) tuples."""
        return cls.from_keys(index.get_level_values(0), index.get_level_values(1), index.get_level_values(2))

    @classmethod
    def independent(cls, n: int) -> Design:
        """n independent scenes of one stream of one model."""
        return cls(np.zeros(n, int), np.zeros(n, int), np.arange(n), False)

    @property
    def n_units(self) -> int:
        return len(self.model)

    @property
    def n_models(self) -> int:
        return int(self.model.max()) + 1 if len(self.model) else 0

    def describe(self) -> str:
        m = self.n_models
        top = f"{m} model seeds resampled" if m > 1 else "one model"
        if self.crossed:
            return f"{top}; scenes shared by several streams drawn once for all of them (crossed)"
        return top + ("; scenes resampled within each stream, nested in their model seed" if m > 1
                      else "; scenes resampled within each stream")

    def _draw_weights(self, rng: np.random.Generator, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.n_models
        w_model = _draw(rng, n_boot, m) if m > 1 else np.ones((n_boot, max(m, 1)))
        w_unit = np.zeros((n_boot, self.n_units))
        if self.crossed:
            w_unit[:] = _draw(rng, n_boot, int(self.scene.max()) + 1)[:, self.scene]
        else:
            for s in range(int(self.stream.max()) + 1 if self.n_units else 0):
                idx = np.flatnonzero(self.stream == s)
                w_unit[:, idx] = _draw(rng, n_boot, len(idx))
        return w_model, w_unit

    def iter_weights(self, n_boot: int, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The ``n_boot`` resamples of ``weights`` in chunks of at most ``WEIGHT_CELLS`` unit weights
        (one chunk, kept for reuse, where they fit), so a design of many units stays small in memory.
        The same design, ``n_boot`` and ``seed`` give the same resamples."""
        step = max(1, WEIGHT_CELLS // max(self.n_units, 1))
        if step >= n_boot:
            yield self.weights(n_boot, seed)
            return
        rng = np.random.default_rng(seed)
        for lo in range(0, n_boot, step):
            yield self._draw_weights(rng, min(step, n_boot - lo))

    def weights(self, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(w_model (B, M), w_unit (B, U)): multiplicities of one bootstrap resample per row. The
        same design, ``n_boot`` and ``seed`` give the same weights (kept for reuse; read-only)."""
        key = (self.model.tobytes(), self.stream.tobytes(), self.scene.tobytes(), self.crossed, n_boot, seed)
        hit = _WEIGHTS.get(key)
        if hit is not None:
            return hit
        w_model, w_unit = self._draw_weights(np.random.default_rng(seed), n_boot)
        for w in (w_model, w_unit):
            w.setflags(write=False)
        if len(_WEIGHTS) >= 32:
            _WEIGHTS.pop(next(iter(_WEIGHTS)))
        _WEIGHTS[key] = (w_model, w_unit)
        return w_model, w_unit

    def boot_nested_mean(self, values: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
        """(n_boot, R) resampled per-scene estimates of ``values`` (U,) or (U, R)."""
        v = np.asarray(values, dtype=np.float64)
        v = v[:, None] if v.ndim == 1 else v
        return np.concatenate([self.nested_mean(v, wm, wu) for wm, wu in self.iter_weights(n_boot, seed)])

    def nested_mean(self, values: np.ndarray, w_model: np.ndarray | None = None,
                    w_unit: np.ndarray | None = None) -> np.ndarray:
        """The per-scene estimate: mean over model seeds of the mean over their units, NaN values
        left out. ``values``: (U,) or (U, R). Without weights: (R,) (the point estimate); with
        weights (B, M) and (B, U): (B, R)."""
        v = np.asarray(values, dtype=np.float64)
        one = v.ndim == 1
        v = v[:, None] if one else v
        point = w_model is None
        if point:
            w_model, w_unit = np.ones((1, max(self.n_models, 1))), np.ones((1, self.n_units))
        ok = np.isfinite(v)
        v0 = np.where(ok, v, 0.0)
        num = np.zeros((w_unit.shape[0], v.shape[1]))
        den = np.zeros_like(num)
        for m in range(self.n_models):
            idx = np.flatnonzero(self.model == m)
            s1 = w_unit[:, idx] @ v0[idx]  # (B, R)
            s0 = w_unit[:, idx] @ ok[idx].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_m = s1 / s0
            _add_model(num, den, mean_m, s0 > 0, w_model[:, m:m + 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)
        out = out[0] if point else out
        return out[..., 0] if one else out

    def pooled_miou(self, confs: np.ndarray, classes: tuple[int, ...] | None, w_model: np.ndarray | None = None,
                    w_unit: np.ndarray | None = None, chunk: int = 200) -> np.ndarray:
        """The pooled estimate: mean over model seeds of the mean over their streams of the stream's
        mIoU from its (resampled) summed confusion matrices. ``confs``: (R, U, C, C). Without weights:
        (R,); with weights: (B, R)."""
        confs = np.asarray(confs, dtype=np.float64)
        point = w_model is None
        if point:
            w_model, w_unit = np.ones((1, max(self.n_models, 1))), np.ones((1, self.n_units))
        out = []
        for lo in range(0, w_unit.shape[0], chunk):
            wu, wm = w_unit[lo:lo + chunk], w_model[lo:lo + chunk]
            num = np.zeros((wu.shape[0], confs.shape[0]))
            den = np.zeros_like(num)
            for m in range(self.n_models):
                streams = np.unique(self.stream[self.model == m])
                acc = np.zeros_like(num)
                cnt = np.zeros_like(num)
                for s in streams:
                    idx = np.flatnonzero(self.stream == s)
                    summed = np.einsum("bu,ruij->brij", wu[:, idx], confs[:, idx])
                    v = miou_batch(summed, classes)  # (b, R)
                    acc += np.nan_to_num(v)
                    cnt += np.isfinite(v)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean_m = acc / cnt
                _add_model(num, den, mean_m, cnt > 0, wm[:, m:m + 1])
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(den > 0, num / np.maximum(den, 1e-300), np.nan))
        res = np.concatenate(out)
        return res[0] if point else res


def _design(design: Design | None, n: int) -> Design:
    if design is None:
        return Design.independent(n)
    if design.n_units != n:
        raise ValueError(f"design has {design.n_units} units, values have {n}")
    return design


# ------------------------------------------------------------------------------------------ tests
def n_boot_for(m: int, alpha: float = ALPHA) -> int:
    """Resamples for a family of m Holm-corrected tests: at least ``N_TEST``, and enough that the
    smallest attainable p-value times m is at most alpha / 2."""
    return max(N_TEST, int(math.ceil(2 * max(m, 1) / alpha)))


def boot_p(d: np.ndarray, star: np.ndarray, alternative: str = "two-sided") -> np.ndarray:
    """Centred bootstrap p-values. ``d``: (R,) point estimates, ``star``: (B, R) resampled ones."""
    d = np.asarray(d, dtype=np.float64)
    star = np.asarray(star, dtype=np.float64)
    dev = star - d
    if alternative == "two-sided":
        hits = np.abs(dev) >= np.abs(d) - 1e-15
    elif alternative == "greater":
        hits = dev >= d - 1e-15
    else:
        raise ValueError(f"alternative {alternative!r}: use 'two-sided' or 'greater'")
    hits &= np.isfinite(star)
    n = np.isfinite(star).sum(0)
    p = (1 + hits.sum(0)) / (1 + n)
    return np.where(np.isfinite(d) & (n > 0), np.minimum(p, 1.0), np.nan)


def paired_test(a: np.ndarray, b: np.ndarray, design: Design | None = None, alternative: str = "two-sided",
                n_boot: int = N_TEST, seed: int = 0) -> tuple[float, float]:
    """Mean per-scene difference a - b (the nested mean of ``Design``) and its paired bootstrap
    p-value (module docstring). Units where either value is NaN are left out. NaN without pairs; p = 1
    when every difference is 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    design = _design(design, len(a))
    d = a - b
    if not np.isfinite(d).any():
        return float("nan"), float("nan")
    point = float(design.nested_mean(d))
    star = design.boot_nested_mean(d, n_boot, seed)
    return point, float(boot_p(np.array([point]), star, alternative)[0])


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


def top_group(means: dict[str, float], paired: dict[str, np.ndarray], design: Design | None = None,
              alpha: float = ALPHA, n_boot: int = N_TEST, seed: int = 0) -> Group:
    """``means``: candidate -> headline mIoU; ``paired``: candidate -> per-scene mIoU on the units of
    ``design`` (the same units in the same order for every candidate). The best is the highest mean;
    a candidate stays in the group unless the one-sided paired bootstrap test of best > candidate
    rejects at ``alpha`` after Holm correction over the candidates. Every test uses the same
    resamples."""
    best = max(means, key=lambda k: (means[k], k))
    others = [k for k in means if k != best]
    if not others:
        return Group(best, frozenset({best}), {})
    d = np.stack([np.asarray(paired[best], float) - np.asarray(paired[k], float) for k in others], 1)
    design = _design(design, d.shape[0])
    point = design.nested_mean(d)
    raw = boot_p(point, design.boot_nested_mean(d, n_boot, seed), "greater")
    adj = holm(raw)
    p = {k: float(v) for k, v in zip(others, adj)}
    members = {best} | {k for k in others if not (np.isfinite(p[k]) and p[k] < alpha)}
    return Group(best, frozenset(members), p)


# -------------------------------------------------------------------------------------- intervals
def bootstrap_miou(confs: np.ndarray, design: Design | None, classes: tuple[int, ...] | None,
                   n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``confs``: (R, U, C, C): R results on the same U units (paired: the same resamples for every
    result). Returns (n_boot, R) resampled pooled mIoU values."""
    confs = np.asarray(confs, dtype=np.float64)
    if confs.ndim == 3:
        confs = confs[None]
    design = _design(design, confs.shape[1])
    return np.concatenate([design.pooled_miou(confs, classes, wm, wu) for wm, wu in design.iter_weights(n_boot, seed)])


def bootstrap_ci(confs: np.ndarray, design: Design | None, classes: tuple[int, ...] | None, n_boot: int = N_BOOT,
                 alpha: float = ALPHA, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the pooled mIoU of one result. ``confs``: (U, C, C)."""
    confs = np.asarray(confs)
    if confs.shape[0] == 0:
        return float("nan"), float("nan")
    vals = bootstrap_miou(confs[None], design, classes, n_boot, seed)[:, 0]
    return float(np.nanpercentile(vals, 100 * alpha / 2)), float(np.nanpercentile(vals, 100 * (1 - alpha / 2)))


def ranks(values: np.ndarray) -> np.ndarray:
    """Rank 1 = highest value, ties share their mean rank, along the last axis."""
    return stats.rankdata(-np.asarray(values), axis=-1, method="average")


Column = tuple[list[str], np.ndarray, Design, tuple[int, ...] | None]


def mean_rank_bootstrap(columns: list[Column], n_boot: int = N_BOOT, alpha: float = ALPHA,
                        seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``columns``: per column (names, confs (R, U, C, C), design, evaluated classes). Each result is
    ranked within each column by its pooled mIoU; its mean rank is the mean over the columns it
    appears in. The interval comes from bootstrap resamples of each column's units (``Design``),
    paired across the column's results, columns resampled independently. Returns name -> (mean rank,
    lo, hi)."""
    point: dict[str, list[float]] = {}
    boot: dict[str, list[np.ndarray]] = {}
    for j, (names, confs, design, classes) in enumerate(columns):
        est = design.pooled_miou(confs, classes)  # (R,)
        for name, r in zip(names, ranks(est)):
            point.setdefault(name, []).append(float(r))
        b = ranks(bootstrap_miou(confs, design, classes, n_boot, seed + j))  # (n_boot, R)
        for i, name in enumerate(names):
            boot.setdefault(name, []).append(b[:, i])
    out = {}
    for name, rs in point.items():
        bm = np.mean(boot[name], axis=0)
        out[name] = (float(np.mean(rs)), float(np.percentile(bm, 100 * alpha / 2)),
                     float(np.percentile(bm, 100 * (1 - alpha / 2))))
    return out


# ------------------------------------------------------------------------------------------ inert
@dataclass(frozen=True)
class Inertness:
    """The verdict of ``inert`` and what it rests on."""

    inert: bool
    reason: str  # "equivalent" | "identical predictions" | "" (not inert)
    diff: float  # mean paired per-scene mIoU difference (row - reference), nested mean
    lo: float  # its (1 - 2 alpha) bootstrap interval
    hi: float
    agree: float  # share of scored points predicted identically (NaN where unknown)


def inert(a: np.ndarray, b: np.ndarray, design: Design | None = None, same: np.ndarray | None = None,
          scored: np.ndarray | None = None, margin: float = INERT_MARGIN, agree_share: float = INERT_AGREE,
          alpha: float = ALPHA, n_boot: int = N_TEST, seed: int = 0) -> Inertness:
    """The rule for a row with "no effect at these settings": its predictions are indistinguishable
    from a reference row's (its baseline) on the same scenes. Inert when either holds:

    1. equivalence on paired per-scene mIoU: the (1 - 2 alpha) percentile bootstrap interval of the
       mean difference ``a - b`` (the resampling of ``design``; two one-sided tests at ``alpha``)
       lies within (-margin, +margin), margin = 0.1 mIoU points;
    2. identical predictions on at least ``agree_share`` (95 %) of the scored points, pooled over the
       scenes: ``same`` = per scene the number of scored points whose prediction equals the
       reference's, ``scored`` = per scene the number of scored points (the scene column
       ``n_same_source`` against Source-Only; none is recorded against BN-Adapt, and rows written before
       that column existed have none: then only rule 1 decides).

    ``a``, ``b``: per-scene mIoU of the row and of its reference on the same units (NaN pairs left
    out). Without a finite pair nothing is known: not inert."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    design = _design(design, len(a))
    agree = float("nan")
    if same is not None and scored is not None:
        n = float(np.nansum(np.asarray(scored, dtype=float)))
        agree = float(np.nansum(np.asarray(same, dtype=float)) / n) if n > 0 else float("nan")
    d = a - b
    if not np.isfinite(d).any():
        ok = np.isfinite(agree) and agree >= agree_share
        return Inertness(bool(ok), "identical predictions" if ok else "", float("nan"), float("nan"), float("nan"),
                         agree)
    point = float(design.nested_mean(d))
    star = design.boot_nested_mean(d, n_boot, seed)[:, 0]
    star = star[np.isfinite(star)]
    lo, hi = (float(np.percentile(star, 100 * alpha)), float(np.percentile(star, 100 * (1 - alpha)))) if len(star) \
        else (float("nan"), float("nan"))
    if np.isfinite(lo) and -margin < lo and hi < margin:
        return Inertness(True, "equivalent", point, lo, hi, agree)
    if np.isfinite(agree) and agree >= agree_share:
        return Inertness(True, "identical predictions", point, lo, hi, agree)
    return Inertness(False, "", point, lo, hi, agree)


__all__ = ["ALPHA", "INERT_AGREE", "INERT_MARGIN", "N_BOOT", "N_TEST", "Design", "Group", "Inertness", "boot_p",
           "bootstrap_ci", "bootstrap_miou", "holm", "inert", "mean_rank_bootstrap", "miou",
           "miou_batch", "n_boot_for", "paired_test", "ranks", "top_group"]
