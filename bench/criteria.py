"""Label-free selection criteria: per-scene values recorded in every row, and selection by one of them.

Every target scene row carries, computed after the scene's prediction and outside the timed parts:

* ``crit_entropy``: the mean per-point Shannon entropy (nats) of the softmax of the row's prediction
  logits; lower is better (a confident model).
* ``crit_agreement``: prediction agreement with the source model, the share of the scene's points on
  which the row's predicted class equals that of the frozen source model (the cell's model before any
  adaptation, normalising with its stored source BN statistics); higher is better (the choice made here
  among TTAB's consistency criteria: agreement with the source rather than across augmentations, since
  it needs one extra forward of a frozen copy and cannot disturb a method's state). Source-Only
  agrees with itself (1.0).
* ``crit_snd``: soft neighbourhood density (Saito et al., ICCV 2021) of the softmax outputs on
  ``SND_POINTS`` points drawn without replacement by a seed of the scene (dataset spec, name, point
  count; every row of a scene draws the same points): the outputs are L2-normalised, their pairwise
  cosine similarities divided by the temperature ``SND_TEMPERATURE`` (0.05, the paper's) and
  softmaxed over the other points of each row (a point is not its own neighbour: the diagonal is left
  out), and SND is the mean entropy of those rows; higher is better (a denser neighbourhood).
* ``crit_kd_loss``: for cells whose method reads teacher features and whose model has the
  distillation head (TTT-KD, TTT-KD-O), the method's own distillation loss (its ``loss``: cosine or
  l2, on the points seen by a view) computed after adaptation with the adapted model in its
  prediction BN mode; NaN for other cells and for scenes with no seen point. Lower is better.

Cell rows hold the mean over the stream's scenes. ``bench select --criterion NAME`` chooses each
method's candidate by the mean of ``crit_NAME`` over its validation cells instead of labelled mIoU
(``choose``): no label is read, so rule v2's inert and diverged filters (both read mIoU) do not apply;
the best criterion value wins, exact ties go to the fewest steps per scene. ``selection_table``
compares what each criterion picks with the labelled pick on a folder that holds validation and test
cells of the same candidates (``bench/grids/label_free.toml``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SND_POINTS = 1024  # points per scene for SND (its cost grows with the square)
SND_TEMPERATURE = 0.05


@dataclass(frozen=True)
class Criterion:
    column: str
    higher_is_better: bool
    what: str


CRITERIA: dict[str, Criterion] = {
    "entropy": Criterion("crit_entropy", False, "mean prediction entropy (nats)"),
    "agreement": Criterion("crit_agreement", True, "agreement with the source model's prediction"),
    "snd": Criterion("crit_snd", True, "soft neighbourhood density of the softmax outputs"),
    "kd_loss": Criterion("crit_kd_loss", False, "TTT-KD's distillation loss after adaptation"),
}


def check_criterion(name: str) -> Criterion:
    from bench.errors import BenchError

    if name not in CRITERIA:
        raise BenchError(f"--criterion {name!r} unknown; valid: {', '.join(CRITERIA)} (see bench/criteria.py)")
    return CRITERIA[name]


# ------------------------------------------------------------------------------------ per scene
def entropy(logits: torch.Tensor) -> float:
    """Mean per-point entropy (nats) of softmax(logits), in float64."""
    logp = torch.log_softmax(logits.detach().double(), 1)
    return float(-(logp.exp() * logp).sum(1).mean())


def agreement(pred: np.ndarray, source_pred: np.ndarray) -> float:
    """Share of points with the same predicted class."""
    pred, source_pred = np.asarray(pred).reshape(-1), np.asarray(source_pred).reshape(-1)
    return float(np.mean(pred == source_pred)) if len(pred) else float("nan")


def snd(logits: torch.Tensor, seed: int, points: int = SND_POINTS, temperature: float = SND_TEMPERATURE) -> float:
    """Soft neighbourhood density of the softmax outputs of ``points`` points drawn by ``seed`` (all of
    a smaller scene), in float64; NaN with fewer than two points."""
    n = logits.shape[0]
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(np.sort(rng.choice(n, size=min(points, n), replace=False))).to(logits.device)
    p = torch.softmax(logits.detach()[idx].double(), 1)
    p = torch.nn.functional.normalize(p, dim=1)
    sim = p @ p.T / temperature
    sim.fill_diagonal_(-math.inf)  # a point is not its own neighbour
    logq = torch.log_softmax(sim, 1)
    q = logq.exp()
    return float(-(q * torch.where(q > 0, logq, torch.zeros_like(logq))).sum(1).mean())


@torch.no_grad()
def kd_loss(model, batch, teacher_feat: torch.Tensor | None, teacher_mask: torch.Tensor | None, loss: str) -> float:
    """The distillation loss of ``model``'s 2D-feature projector against the lifted teacher features on the
    seen points, with the model as it is (its BN mode left as the prediction set it; BN buffers restored,
    so a mode that updates statistics changes nothing); NaN without a distillation head or a seen point."""
    from backbones.losses import distill_loss

    heads = getattr(model, "heads", {})
    if teacher_feat is None or teacher_mask is None or "kd" not in heads or not bool(teacher_mask.any()):
        return float("nan")
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    try:
        out = model(batch, ("kd",))["kd"]
        return float(distill_loss(out, teacher_feat, teacher_mask, loss))
    finally:
        model.load_state_dict(saved, strict=False)


def scene_seed(dataset: str, name: str, n: int) -> int:
    """The seed of a scene's SND sample: the same for every row of the scene."""
    from bench.cache import stable_hash

    return int(stable_hash(["snd", dataset, name, n], 8), 16)


def scene_criteria(logits: torch.Tensor, source_logits: torch.Tensor | None, seed: int,
                   kd: float = float("nan")) -> dict[str, float]:
    """The ``crit_*`` columns of one scene row (see the module docstring)."""
    pred = logits.argmax(1).cpu().numpy()
    agree = agreement(pred, source_logits.argmax(1).cpu().numpy()) if source_logits is not None else float("nan")
    return {"crit_entropy": entropy(logits), "crit_agreement": agree, "crit_snd": snd(logits, seed),
            "crit_kd_loss": float(kd)}


# ------------------------------------------------------------------------------------ selection
def choose(cands: list, rows, criterion: str, budget_s: float | None = None) -> dict[str, dict]:
    """Per method, the candidate with the best mean ``crit_NAME`` over its validation cells (``rows``: the
    cell rows indexed by cell id), in the layout of ``bench.select``'s result (``_document`` writes it):
    no mIoU is read. Candidates slower than ``budget_s`` per scene, or whose criterion is NaN on every
    cell, are left out; exact ties go to the fewest steps per scene, then the first in the space's order."""
    crit = check_criterion(criterion)
    sign = 1.0 if crit.higher_is_better else -1.0
    out: dict[str, dict] = {}
    for cd in cands:
        r = rows.loc[[c.cell_id for c in cd.cells]]
        vals = r[crit.column].to_numpy(dtype=float) if crit.column in r else np.full(len(r), np.nan)
        adapt = float(np.mean(r["adapt_s_per_scene"].to_numpy(dtype=float)))
        score = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        entry = {"params": cd.params, "score": score, "criterion": criterion, "cells": len(vals),
                 "steps_per_scene": float(np.mean(r["steps_per_scene"].to_numpy(dtype=float))),
                 "adapt_s_per_scene": adapt, "within_budget": budget_s is None or adapt <= budget_s}
        m = out.setdefault(cd.method, {"candidates": [], "selected": {}, "fixed": cd.fixed, "score": math.nan,
                                       "best_score": math.nan, "n_cells": len(vals), "outcome": "selected",
                                       "why": "", "baseline": None})
        m["candidates"].append(entry)
    for m in out.values():
        ok = [e for e in m["candidates"] if e["within_budget"] and math.isfinite(e["score"])]
        if not ok:
            m["outcome"] = f"no candidate with a finite {criterion} within the budget"
            continue
        best = max(sign * e["score"] for e in ok)
        tied = [e for e in ok if sign * e["score"] >= best - 1e-12]
        chosen = min(tied, key=lambda e: e["steps_per_scene"])  # min keeps the first of equals
        m["selected"], m["score"], m["best_score"] = dict(chosen["params"]), chosen["score"], sign * best
        m["why"] = f"label-free: {'highest' if crit.higher_is_better else 'lowest'} mean {crit.column}"
    return out


def _split(stream: str) -> str:
    splits = {s.get("split", "test") for s in json.loads(stream)}
    return splits.pop() if len(splits) == 1 else "mixed"


def selection_table(cells) -> Any:
    """What each criterion picks on the validation cells of a folder, and what the pick scores on its test
    cells: one line per (method, criterion) with the picked parameters, the mean validation value of the
    criterion, the mean test mIoU of the pick, and the gap ``test mIoU(labelled pick) - test mIoU(pick)``.
    ``labelled`` picks the highest mean validation mIoU; ``oracle`` the highest test mIoU (the best any
    selection could do). Validation cells read only val splits, test cells only test splits; candidates
    are a method's distinct parameter sets present in both. Returns a DataFrame (empty when nothing applies)."""
    import pandas as pd

    if cells.empty or "stream" not in cells or not any(c.column in cells for c in CRITERIA.values()):
        return pd.DataFrame()
    c = cells[cells["status"] == "ok"].copy() if "status" in cells else cells.copy()
    c["split"] = c["stream"].map(_split)
    recs = []
    for method, g in c.groupby("method", sort=False):
        val, test = g[g["split"] == "val"], g[g["split"] == "test"]
        cands = sorted(set(val["params"]) & set(test["params"]))
        if len(cands) < 2:
            continue
        vmean = val.groupby("params").mean(numeric_only=True).loc[cands]
        tmean = test.groupby("params")["miou"].mean().loc[cands]
        picks = {"labelled": vmean["miou"].idxmax()}
        for name, crit in CRITERIA.items():
            v = vmean[crit.column] if crit.column in vmean else None
            if v is None or not np.isfinite(v.to_numpy(dtype=float)).any():
                continue
            picks[name] = v.idxmax() if crit.higher_is_better else v.idxmin()
        picks["oracle"] = tmean.idxmax()
        for name, p in picks.items():
            col = CRITERIA[name].column if name in CRITERIA else "miou"
            recs.append({"method": method, "criterion": name, "params": p,
                         "validation": float(vmean.at[p, col]) if name != "oracle" else math.nan,
                         "test_miou": float(tmean[p]), "gap": float(tmean[picks["labelled"]] - tmean[p]),
                         "candidates": len(cands)})
    return pd.DataFrame(recs)


__all__ = ["CRITERIA", "Criterion", "SND_POINTS", "SND_TEMPERATURE", "agreement", "check_criterion", "choose",
           "entropy", "kd_loss", "scene_criteria", "scene_seed", "selection_table", "snd"]
