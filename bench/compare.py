"""``python -m bench compare RUN [REFERENCE]``: does a run reproduce the reference results?

Rows of the two folders are matched by what the cell ran (method, label, parameters, recipe,
teacher, backbone, protocol, source, target, number of test scenes; never the cell id, which
changes with the code), and each (row, pair) gets a verdict:

* ``Δ`` = run mean − reference mean of the cells' mIoU over seeds.
* Tolerance: with two or more reference seeds, ``t(0.975, n_ref − 1) · sd_ref · sqrt(1/n_ref +
  1/n_run)`` (a 95% interval for the difference of two means under the reference's seed spread),
  at least ``NOISE_MEAN``; with one reference seed, ``SINGLE_SEED_TOL``. Both constants come from
  issue 15's measurement: the 117 ``id_ood`` cells run with the same code, seed and threads on an
  AMD EPYC instead of the reference's Intel Xeon differed by 0.9 mIoU points on average (median
  0.6) and by at most 6.0 (a Joint-Train cell whose training diverged).
* When both folders have per-scene rows, a two-sided paired bootstrap test on the per-scene mIoU
  differences (pairs = same model seed, seed and scene; ``bench.stats.paired_test``: scenes resampled
  within each seed's stream, model seeds first where there are several, shared scenes drawn once)
  guards the tolerance: a cell outside the tolerance disagrees only if the test also finds a
  systematic difference (p < ``ALPHA``); a gap carried by one or two scenes is noise. Without
  per-scene rows the tolerance alone decides.
* Both folders are scored by the current rule (``bench.rescore``: cell and scene mIoU from the
  per-scene confusion matrices, a class without ground-truth points not scored), so a reference
  written under an earlier rule compares with a new run on equal terms; folders without per-scene
  rows keep the mIoU their cells recorded.
* A run cell that errored disagrees. Rows only in one folder are listed but do not fail.

Returns 0 when every compared (row, pair) agrees, else 1.
"""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy import stats as sps

from bench.data.classes import CLASSES
from bench.env import PROJECT_ROOT
from bench.errors import BenchError
from bench.rescore import rescore
from bench.stats import Design, paired_test
from bench.store import ResultsStore

log = logging.getLogger(__name__)

NOISE_MEAN = 0.009  # mean |Δ mIoU| of single cells across CPU types (issue 15), as a fraction
SINGLE_SEED_TOL = 0.06  # max |Δ mIoU| of single cells across CPU types (issue 15), as a fraction
ALPHA = 0.05
# what a row ran, in columns whose text is stable across versions (full configs such as train_cfg may
# gain recorded defaults); rows differing only elsewhere are averaged like seeds
KEY = ("label", "method", "params", "recipe", "train_on", "teacher", "backbone", "episodic", "predict", "source",
       "target", "n_test")


def grid_name(folder: Path) -> str:
    """The grid a results folder was run from (env.json ``grid``, else config.toml ``name``)."""
    env, cfg = folder / "env.json", folder / "config.toml"
    if env.is_file():
        try:
            name = json.loads(env.read_text()).get("grid")
        except json.JSONDecodeError as e:
            raise BenchError(f"{env}: not valid JSON ({e}); pass the reference folder explicitly") from e
        if name:
            return str(name)
    if cfg.is_file():
        try:
            name = tomllib.loads(cfg.read_text()).get("name")
        except tomllib.TOMLDecodeError as e:
            raise BenchError(f"{cfg}: not valid TOML ({e}); pass the reference folder explicitly") from e
        if name:
            return str(name)
    raise BenchError(f"{folder}: no env.json or config.toml naming the grid; pass the reference folder explicitly "
                     "(python -m bench compare RUN REFERENCE)")


def reference_candidates(grid: str) -> list[Path]:
    """Where a grid's reference results may be, in order: ``results/reference/GRID`` (or the older
    ``results/GRID``) under the working directory, then under the repository holding this package."""
    roots = [Path.cwd(), PROJECT_ROOT]
    return list(dict.fromkeys(root / sub / grid for root in roots for sub in (Path("results") / "reference",
                                                                              Path("results"))))


def default_reference(run: Path) -> Path:
    """The first of ``reference_candidates`` with results; never the run folder itself."""
    grid = grid_name(run)
    tried = reference_candidates(grid)
    for cand in tried:
        if (cand / "cells.parquet").is_file() and cand.resolve() != run.resolve():
            return cand
    raise BenchError(f"no reference results for grid '{grid}' (looked in {', '.join(map(str, tried))}); "
                     "pass the reference folder explicitly (python -m bench compare RUN REFERENCE)")


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = ResultsStore(folder)
    cells = store.cells()
    if cells.empty:
        raise BenchError(f"{folder}: no results (cells.parquet missing or empty)")
    return cells, store.scenes()


def _keyed(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    c = cells.copy()
    if "params" in c:
        c["params"] = c["params"].map(lambda s: json.dumps(json.loads(s) if isinstance(s, str) and s else {},
                                                           sort_keys=True))
    for k in keys:
        c[k] = c[k].fillna("").astype(str)
    c["key"] = list(zip(*[c[k] for k in keys]))
    return c


def _tolerance(ref: np.ndarray, n_run: int) -> float:
    if len(ref) >= 2:
        sd = float(np.std(ref, ddof=1))
        t = float(sps.t.ppf(1 - ALPHA / 2, len(ref) - 1))
        return max(t * sd * np.sqrt(1 / len(ref) + 1 / max(n_run, 1)), NOISE_MEAN)
    return SINGLE_SEED_TOL


def _per_scene(scenes: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame | None:
    if scenes.empty:
        return None
    parts = []
    for cid, ms, sd in zip(cells["cell_id"], cells["model_seed"], cells["seed"]):
        g = scenes[scenes["cell_id"] == cid]
        if g.empty:
            return None
        parts.append(g.assign(model_seed=ms, seed=sd)[["model_seed", "seed", "scene", "miou"]])
    return pd.concat(parts)


def _scored(cells: pd.DataFrame, scenes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finished-or-not cells and their target scenes, rescored by the current rule; ``model_seed``
    defaults to ``seed`` (rows from before protocol v3 trained one model per seed)."""
    cells = cells.copy()
    if "model_seed" not in cells:
        cells["model_seed"] = cells["seed"]
    cells["model_seed"] = cells["model_seed"].fillna(cells["seed"])
    if not scenes.empty and "probe" in scenes:
        scenes = scenes[~scenes["probe"].fillna(False).astype(bool)]
    return rescore(cells, scenes, CLASSES)


def compare_frames(run_cells: pd.DataFrame, run_scenes: pd.DataFrame, ref_cells: pd.DataFrame,
                   ref_scenes: pd.DataFrame) -> pd.DataFrame:
    """One row per (row, pair) in either folder: the means, Δ, tolerance, p and a verdict
    (``agree`` | ``differs`` | ``error`` | ``not run`` | ``no reference``)."""
    keys = [k for k in KEY if k in run_cells and k in ref_cells]
    run_cells, run_scenes = _scored(run_cells, run_scenes)
    ref_cells, ref_scenes = _scored(ref_cells, ref_scenes)
    run, ref = _keyed(run_cells, keys), _keyed(ref_cells[ref_cells["status"] == "ok"], keys)
    out = []
    for key in sorted(set(run["key"]) | set(ref["key"])):
        a, b = run[run["key"] == key], ref[ref["key"] == key]
        rec = dict(zip(keys, key))
        rec.update(ref_mean=np.nan, ref_sd=np.nan, ref_n=len(b), run_mean=np.nan, run_n=0, delta=np.nan,
                   tol=np.nan, p=np.nan)
        if len(b):
            rec.update(ref_mean=b["miou"].mean(), ref_sd=b["miou"].std(ddof=1) if len(b) > 1 else np.nan)
        failed = a[a["status"] != "ok"]
        a = a[a["status"] == "ok"]
        rec.update(run_n=len(a), run_mean=a["miou"].mean() if len(a) else np.nan)
        if len(failed):
            rec["verdict"] = "error"
        elif not len(b):
            rec["verdict"] = "no reference"
        elif not len(a):
            rec["verdict"] = "not run"
        else:
            delta = float(a["miou"].mean() - b["miou"].mean())
            tol = _tolerance(b["miou"].to_numpy(), len(a))
            sa, sb = _per_scene(run_scenes, a), _per_scene(ref_scenes, b)
            p = np.nan
            if sa is not None and sb is not None:
                m = sa.merge(sb, on=["model_seed", "seed", "scene"], suffixes=("_run", "_ref"))
                if len(m):
                    design = Design.from_keys(m["model_seed"], m["seed"], m["scene"])
                    p = paired_test(m["miou_run"].to_numpy(), m["miou_ref"].to_numpy(), design)[1]
            outside = abs(delta) > tol
            differs = outside and (not np.isfinite(p) or p < ALPHA)
            rec.update(delta=delta, tol=tol, p=p, verdict="differs" if differs else "agree")
        out.append(rec)
    return pd.DataFrame(out)


def _name(r) -> str:
    params = json.loads(r.get("params") or "{}")
    s = str(r.get("label") or r.get("method"))
    s += f" ({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})" if params else ""
    s += f" [{r['teacher']}]" if r.get("teacher") else ""
    return escape(s + (f" {r['backbone']}" if r.get("backbone") else ""))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}" if np.isfinite(x) else "-"


def compare(run: Path, reference: Path | None = None, console: Console | None = None) -> int:
    """Compare a run folder with its reference; print a table; 0 if every compared row agrees."""
    console = console or Console()
    run = Path(run)
    reference = Path(reference) if reference is not None else default_reference(run)
    run_cells, run_scenes = _read(run)
    ref_cells, ref_scenes = _read(reference)
    res = compare_frames(run_cells, run_scenes, ref_cells, ref_scenes)
    compared = res[res["verdict"].isin(["agree", "differs", "error"])]
    if compared.empty:
        raise BenchError(f"{run} and {reference} have no (method, pair) in common; are they runs of the same grid "
                         "with the same test scenes?")
    style = {"agree": "green", "differs": "bold red", "error": "bold red", "not run": "yellow",
             "no reference": "yellow"}
    t = Table(title=escape(f"{run} against {reference} (mIoU %)"))
    for col in ("method", "source → target", "reference", "run", "Δ", "tolerance", "p (paired)", "verdict"):
        t.add_column(col, justify="left" if col in ("method", "source → target", "verdict") else "right")
    for r in res.to_dict("records"):
        ref = _pct(r["ref_mean"]) + (f" ± {100 * r['ref_sd']:.1f}" if np.isfinite(r["ref_sd"]) else "")
        t.add_row(_name(r), f"{r['source']} → {r['target']}", f"{ref} (n={r['ref_n']})",
                  f"{_pct(r['run_mean'])} (n={r['run_n']})",
                  f"{100 * r['delta']:+.1f}" if np.isfinite(r["delta"]) else "-", _pct(r["tol"]),
                  f"{r['p']:.3g}" if np.isfinite(r["p"]) else "-",
                  f"[{style[r['verdict']]}]{r['verdict']}[/]")
    console.print(t)
    bad = compared[compared["verdict"] != "agree"]
    console.print(f"{len(compared) - len(bad)} of {len(compared)} (method, pair) agree; "
                  f"{(res['verdict'] == 'not run').sum()} reference rows not in the run, "
                  f"{(res['verdict'] == 'no reference').sum()} run rows without a reference. Tolerance: the "
                  f"reference's seed spread, or ±{100 * SINGLE_SEED_TOL:.0f} points with one seed (cross-CPU noise); "
                  "outside it, a difference counts only if the paired per-scene test also rejects (p < 0.05).")
    if len(bad):
        console.print("[bold red]does not agree:[/]")
        for r in bad.to_dict("records"):
            console.print(f"  {_name(r)}  {r['source']} → {r['target']}: "
                          + ("errored in the run" if r["verdict"] == "error" else
                             f"{_pct(r['ref_mean'])} → {_pct(r['run_mean'])} (Δ {100 * r['delta']:+.1f}, "
                             f"tolerance {_pct(r['tol'])}, p {r['p']:.3g})"))
        return 1
    return 0
