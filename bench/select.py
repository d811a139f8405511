"""``python -m bench select``: hyper-parameter selection on validation pairs only, written to a new
versioned file of selected values (read by grids through ``bench.selection``).

**Search spaces.** Each method's config dataclass declares its candidates as a class variable
``SEARCH`` (``methods/base.py``), e.g. ``{"lr": (3e-5, 1e-4, 3e-4), "steps": (5, 25, 50)}``. A
selection grid (``bench/grids/select.toml``) is an ordinary grid file whose targets are *validation*
streams, plus a ``[select]`` table: ``for_grids`` (the test grids the selection is for, "all" = every
grid of ``bench/grids`` that is not itself a selection grid), ``allow_source_val`` (see below) and an
optional ``[select.space.METHOD]`` table that replaces a method's declared space. Each method appears
once; a parameter that its table sets is held fixed (not searched) and recorded as ``fixed``.

**Validation pairs never touch a test pair.** Before anything runs, every validation segment is
checked against every cell of the test grids; a segment is refused when it reads a ``test`` split,
or its base dataset is a target of a test cell. The one exception (``allow_source_val = true``, the
default) is held-out *source* data: a segment whose base dataset is the validation pair's own
source, read from the ``val`` split and corrupted (e.g. ``synth-s3dis -> synth-s3dis:jitter@3``,
val split); it is still refused if the same corrupted spec is itself a test target, or if a test
stream reads that dataset's val split, or if any of its scenes is a scene of a test cell (scene
names compared). Such source scenes are labelled source data, available wherever the source model
is trained; for a test pair whose target is another pair's source they are held-out scenes of that
target's domain (corrupted), which ``allow_source_val = false`` rules out too.

**Validation streams are as long as the test streams they stand for.** Before anything runs, every
validation stream is checked against the test grids that use selected values (those not pinning
``selected = "none"``): a validation stream shorter than the longest test stream of a selected
method is refused (online methods that look good on a short stream can forget on a long one).

**Selection.** Every candidate (the product of the space) runs on every validation cell (pairs x
seeds) through the normal runner into ``runs/select/GRID`` (resumable, cells shared by id); the
score of a candidate is its mean cell mIoU over those cells; with ``--budget-s S``, candidates whose
mean adaptation time per scene exceeds S seconds are excluded. Candidates within ``tolerance`` (the
``[select]`` key; default 0.005 = 0.5 mIoU points) of the best score count as tied, and the cheapest
of them (fewest adaptation steps per scene, then the higher score, then the first in the space's
order) is chosen per method: on a few validation scenes smaller differences are noise, and paying
three times the compute for them would only slow every test grid down. It is written to a new
version ``bench/selected/vN.toml``, with the
validation pairs, seeds, date, git commit, grid, and every candidate's score.

**Rule v2** (``[select] rule = "v2"``, the default; declared after seeing v1's results, in the
grid's ``rule_note`` and the written file). Each method also runs its *baseline* on the same
validation cells: the method with ``steps = 0`` (its forward, BN mode and prediction without any
update) where its config has ``steps``, else the parameters of ``[select.baseline.METHOD]`` (none:
no baseline, rule v1 for that method). A candidate is *inert* when it is indistinguishable from the
baseline (``no_effect``: paired per-scene mIoU equivalent within 0.1 points, or the same predicted
class on >= 95 % of the sampled points, ``agreement``) and *diverged* when its score is not finite
or below half the baseline's. The choice is made among the candidates that are neither; when none
is left, the method's defaults are kept and the file says why (``outcome = "no candidate differs
from the baseline"``, rows of grids that use it record it in ``hp_note``). ``rule = "v1"`` chooses
as before, without baselines.

Grids read the selected-values files through ``bench.selection`` (the library: the file, which
version a grid uses, the provenance columns, the validation-vs-test checks); this module is the command.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import selection
from bench.env import PROJECT_ROOT
from bench.errors import BenchError
from bench.selection import pair_label, validation_problems
from bench.stats import ALPHA, INERT_AGREE, INERT_MARGIN

log = logging.getLogger(__name__)

SELECT_KEYS = {"for_grids", "allow_source_val", "space", "tolerance", "rule", "rule_note", "baseline"}
DEFAULT_TOLERANCE = 0.005  # mIoU (0.5 points): candidates this close to the best count as tied, the cheapest wins
RULES = ("v1", "v2")
NO_CANDIDATE_DIFFERS = "no candidate differs from the baseline"
DIVERGED = 0.5  # a candidate whose score is below this fraction of its baseline's has diverged

__all__ = ["run_selection", "Effect", "no_effect", "agreement", "Candidate", "expand", "space_of", "baseline_params",
           "check_stream_lengths", "load_test_grids"]


# ------------------------------------------------------------------------------------- the inert rule
@dataclass(frozen=True)
class Effect:
    """What ``no_effect`` found for a row against its baseline (mIoU as fractions)."""

    inert: bool  # no effect at these settings
    why: str  # which criterion made it inert, or why it is not
    n: int  # paired scenes
    mean_diff: float  # mean per-scene mIoU difference (row - baseline)
    ci: tuple[float, float]  # its (1 - 2 alpha) confidence interval (the equivalence test's interval)
    agreement: float  # share of points with the same predicted class (NaN: not known)


def no_effect(row: Any, baseline: Any, same_points: float | None = None) -> Effect:
    """Is a row indistinguishable from its baseline? ``row`` and ``baseline`` are per-scene mIoU (fractions),
    paired by scene (pairs with a NaN are left out); ``same_points`` the share of points on which the
    two predict the same class (``agreement``), if known.

    The report's inert rule, ``bench.stats.inert`` (one rule for both): inert when (1) the paired
    differences are *equivalent* to zero within 0.1 mIoU points (the (1 - 2 alpha) percentile bootstrap
    interval of the mean difference inside (-0.1, +0.1) points; scenes resampled as one stream), or
    (2) the two predict the same class on at least 95 % of the points."""
    import numpy as np

    from bench.stats import inert

    a, b = np.asarray(row, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise BenchError(f"no_effect: {a.size} row values against {b.size} baseline values; pair them by scene")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    agree = float("nan") if same_points is None else float(same_points)
    known = math.isfinite(agree)
    r = inert(a, b, None, np.array([agree]) if known else None, np.array([1.0]) if known else None)
    n = int(a.size)
    if n == 0:
        why = f"same predictions on {100 * agree:.1f} % of points" if r.inert else "no paired scene"
        return Effect(r.inert, why, 0, float("nan"), (float("nan"), float("nan")), agree)
    shown = f"mean difference {100 * r.diff:+.3f} points, {100 * (1 - 2 * ALPHA):.0f} % interval " \
            f"[{100 * r.lo:+.3f}, {100 * r.hi:+.3f}] over {n} scenes"
    if r.inert and r.reason == "equivalent":
        why = f"equivalent within {100 * INERT_MARGIN:.1f} points ({shown})"
    elif r.inert:
        why = f"same predictions on {100 * agree:.1f} % of points ({shown})"
    else:
        why = f"differs: {shown}" + (f", same predictions on {100 * agree:.1f} % of points" if known else "")
    return Effect(r.inert, why, n, r.diff, (r.lo, r.hi), agree)


def agreement(row: Any, baseline: Any, weights: Any = None) -> float:
    """The share of points on which two rows predict the same class, from their scene rows'
    ``pred_sample`` (``bench.cell.pred_sample``: the predicted class of the same sampled points of a
    scene), paired by scene; scenes weighted by ``weights`` (e.g. their point counts), else by their
    samples. NaN when no pair has samples of equal length."""
    import numpy as np

    same = total = 0.0
    w = list(weights) if weights is not None else [None] * len(row)
    for x, y, wt in zip(row, baseline, w):
        if not isinstance(x, (bytes, bytearray)) or not isinstance(y, (bytes, bytearray)) or len(x) != len(y) or not x:
            continue
        eq = float(np.mean(np.frombuffer(x, np.uint8) == np.frombuffer(y, np.uint8)))
        k = float(wt) if wt is not None else float(len(x))
        same, total = same + k * eq, total + k
    return same / total if total else float("nan")


def _shown_path(path: Path) -> str:
    """A grid file as the selection file records it: relative to the project for the project's own grids
    (the file is committed; another clone's absolute path means nothing), absolute otherwise."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(Path(path).resolve())



# ----------------------------------------------------------------------------------------- selection
@dataclass
class Candidate:
    method: str
    params: dict[str, Any]  # the searched values
    fixed: dict[str, Any]  # the values the selection grid's method table holds fixed
    cells: list = field(default_factory=list)  # validation cells of this candidate


def _select_table(raw: dict, path: Path) -> dict:
    t = raw.get("select")
    if not isinstance(t, dict):
        raise BenchError(f"{path}: a selection grid needs a 'select' table (keys: {', '.join(sorted(SELECT_KEYS))})")
    bad = sorted(set(t) - SELECT_KEYS)
    if bad:
        raise BenchError(f"{path}: table 'select' has unknown key(s) {', '.join(bad)}; "
                         f"valid: {', '.join(sorted(SELECT_KEYS))}")
    tol = t.get("tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 <= tol < 1:
        raise BenchError(f"{path}: select.tolerance = {tol!r} must be a number in [0, 1) (mIoU as a fraction: "
                         f"0.005 = 0.5 points)")
    fg = t.get("for_grids", "all")
    if not (fg == "all" or (isinstance(fg, list) and fg and all(isinstance(x, str) for x in fg))):
        raise BenchError(f"{path}: select.for_grids = {fg!r} must be \"all\" or a list of grid names/files")
    if not isinstance(t.get("allow_source_val", True), bool):
        raise BenchError(f"{path}: select.allow_source_val must be true or false")
    space = t.get("space", {})
    if not isinstance(space, dict) or not all(isinstance(v, dict) and all(isinstance(x, list) and x for x in v.values())
                                              for v in space.values()):
        raise BenchError(f"{path}: the select.space.METHOD tables must map parameters to non-empty lists of values")
    if t.get("rule", RULES[-1]) not in RULES:
        raise BenchError(f"{path}: select.rule = {t.get('rule')!r} unknown; valid: {', '.join(RULES)} (see "
                         "bench/select.py)")
    if not isinstance(t.get("rule_note", ""), str):
        raise BenchError(f"{path}: select.rule_note must be a string (why the rule is what it is)")
    base = t.get("baseline", {})
    if not isinstance(base, dict) or not all(isinstance(v, dict) for v in base.values()):
        raise BenchError(f"{path}: the select.baseline.METHOD tables must map parameters to values (the method's "
                         "baseline: e.g. rotta = {{update_frequency = 1000000000}})")
    return t


def baseline_params(method: str, table: dict, sel_table: dict) -> dict | None:
    """The parameters that make a method's baseline (rule v2): ``[select.baseline.METHOD]``, else
    ``steps = 0`` where its config has ``steps``, else None (no baseline)."""
    from bench.registry import config_fields
    from methods import METHODS

    given = (sel_table.get("baseline") or {}).get(method)
    if given is not None:
        return dict(given)
    return {"steps": 0} if "steps" in config_fields(METHODS.get(method)) else None


def check_stream_lengths(val_cells: list, tests: list, methods: set[str]) -> list[str]:
    """Validation streams shorter than the longest test stream of a selected method in a test grid that
    uses selected values (not ``selected = "none"``): one message per short validation pair."""
    longest, where = 0, ""
    for g in tests:
        if g.raw.get("selected", "latest") in ("none", False):
            continue
        for c in g.all_cells:
            if c.method in methods and c.test_scenes > longest:
                longest, where = c.test_scenes, f"grid {g.name}, {c.label} on {c.source}->{c.target}"
    out = {}
    for c in val_cells:
        if c.test_scenes < longest:
            label = pair_label(c.source, [s.to_dict() for s in c.stream])
            out[label] = (f"validation pair {label} reads {c.test_scenes} scenes, the test streams it stands for up to "
                          f"{longest} ({where}): give every validation stream at least {longest} scenes (an online "
                          "method's setting that holds on a short stream can forget on a long one)")
    return list(out.values())


def load_test_grids(for_grids: Any, self_path: Path) -> list:
    """The test grids a selection is checked against (loaded without any selection)."""
    from bench.grid import GRID_DIR, Overrides, load_grid

    if for_grids == "all":
        names = []
        for p in sorted(GRID_DIR.glob("*.toml")):
            if p.resolve() == self_path.resolve():
                continue
            try:
                if "select" in tomllib.loads(p.read_text()):
                    continue
            except tomllib.TOMLDecodeError:
                pass  # load_grid below says what is wrong with it
            names.append(str(p))
    else:
        names = list(for_grids)
    return [load_grid(n, Overrides(selected="none")) for n in names]


def space_of(method: str, table: dict, overrides: dict) -> dict[str, tuple]:
    """A method's search space: the selection grid's [select.space.METHOD] or its config's SEARCH,
    without the parameters the grid's method table fixes."""
    from methods import METHODS

    entry = METHODS.get(method)
    space = overrides.get(method) or getattr(entry.config, "SEARCH", None) or {}
    return {k: tuple(v) for k, v in space.items() if k not in table}


def expand(grid, sel_table: dict) -> tuple[list[Candidate], list[str], dict[str, Candidate]]:
    """Every (method, candidate) with its validation cells; methods with nothing to search are listed
    apart; and (rule v2) each searched method's baseline with its cells, in the order of the
    candidates' cells (the i-th baseline cell is the i-th cell's pair and seed)."""
    from bench.spec import resolve

    cands: dict[tuple[str, str], Candidate] = {}
    skipped: list[str] = []
    fixed: dict[str, dict] = {}
    baselines: dict[str, Candidate] = {}
    v2 = sel_table.get("rule", RULES[-1]) == "v2"
    for base in grid.cells:
        if fixed.setdefault(base.method, base.params) != base.params:
            raise BenchError(f"{grid.path}: method '{base.method}' appears with different parameters "
                             f"({fixed[base.method]} and {base.params}); a selection grid lists each method once, "
                             "with single values (its SEARCH space is what is crossed)")
        space = space_of(base.method, base.params, sel_table.get("space", {}))
        if not space:
            if base.method not in skipped:
                skipped.append(base.method)
            continue
        keys = list(space)
        for combo in itertools.product(*(space[k] for k in keys)):
            params = dict(zip(keys, combo))
            plain = base.to_dict()
            plain["params"] = {**plain.get("params", {}), **params}
            cell = resolve(plain, f"{grid.path}: method '{base.method}' candidate {params}")
            key = (base.method, json.dumps(params, sort_keys=True))
            cands.setdefault(key, Candidate(base.method, params, dict(base.params))).cells.append(cell)
        bp = baseline_params(base.method, base.params, sel_table) if v2 else None
        if bp is not None:
            plain = base.to_dict()
            plain["params"] = {**plain.get("params", {}), **bp}
            cell = resolve(plain, f"{grid.path}: method '{base.method}' baseline {bp}")
            baselines.setdefault(base.method, Candidate(base.method, bp, dict(base.params))).cells.append(cell)
    return list(cands.values()), skipped, baselines


def _steps(cell) -> int:
    return int(getattr(cell.method_cfg, "steps", 1) or 0)


def run_selection(grid_name: str = "select", out: Path | None = None, runs: Path | None = None,
                  budget_s: float | None = None, executor: str = "inprocess", workers: int = 1,
                  address: str | None = None, only: list[str] | None = None, device: str | None = None,
                  dry_run: bool = False, console=None, command: str = "", criterion: str | None = None) -> Path | None:
    """Run the selection grid's candidates on its validation cells and write the selected values.
    Returns the file written (None for a dry run). With ``criterion`` (``bench.criteria``) each method's
    candidate is chosen by that label-free criterion instead of labelled mIoU (``bench.criteria.choose``),
    and the file goes to ``out`` or ``RUNS/criterion-NAME.toml`` (never a ``bench/selected`` version)."""
    from rich.console import Console

    if criterion is not None:
        from bench.criteria import check_criterion

        check_criterion(criterion)

    from bench.grid import Grid, Overrides, load_grid
    from bench.runner import run_grid
    from bench.store import ResultsStore

    console = console or Console(stderr=True)
    if budget_s is not None and not (budget_s > 0):
        raise BenchError(f"--budget-s {budget_s} must be a positive number of seconds per scene")
    grid = load_grid(grid_name, Overrides(selected="none", only=list(only or []), device=device))
    sel_table = _select_table(grid.raw, grid.path)
    allow_source = bool(sel_table.get("allow_source_val", True))
    tests = load_test_grids(sel_table.get("for_grids", "all"), grid.path)
    test_cells = [c for g in tests for c in g.all_cells]
    problems = validation_problems(grid.all_cells, test_cells, allow_source)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise BenchError(f"{grid.path}: {len(problems)} validation pair problem(s); selection never reads test "
                         f"pairs:\n{lines}")
    cands, skipped, baselines = expand(grid, sel_table)
    if skipped:
        log.info("no search space (nothing to select): %s", ", ".join(skipped))
    if not cands:
        raise BenchError(f"{grid.path}: none of its methods has a search space to select (SEARCH in the method's "
                         "config, or a select.space.METHOD table)")
    short = check_stream_lengths(grid.all_cells, tests, {cd.method for cd in cands})
    if short:
        lines = "\n".join(f"  - {p}" for p in short)
        raise BenchError(f"{grid.path}: validation streams must be as long as the test streams they stand "
                         f"for:\n{lines}")
    cells = list({c.cell_id: c for cd in cands + list(baselines.values()) for c in cd.cells}.values())
    shared = {c.model_key() for c in test_cells}
    own = {c.model_key() for c in cells} - shared
    if own:
        log.info("%d model(s) of the validation cells are not models of the test grids and are trained for the "
                 "selection alone (make backbones, [train], train_scenes and seeds match id_ood to share them)",
                 len(own))
    runs = runs or Path("runs") / "select" / grid.name
    if dry_run:
        _print_plan(cands, console, baselines)
        console.print(f"validation pairs checked against the cells of {len(tests)} test grid(s): "
                      f"{', '.join(g.name for g in tests) or 'none'}; no problem found")
        if budget_s is not None:
            console.print(f"--budget-s {budget_s:g}: every candidate above still runs (its time per scene is known "
                          "only once measured); candidates that adapt slower than that per scene are then left out "
                          "of the choice")
        return None
    g = Grid(grid.name, grid.path, grid.raw, grid.text, cells, cells)
    res = run_grid(g, runs, None, executor, workers, address, console, command)
    if res["errors"]:
        raise BenchError(f"{res['errors']} validation cell(s) failed (see {runs / 'cells.csv'}); nothing was selected. "
                         "Fix the cause and run the same command again: finished cells are kept")
    store = ResultsStore(runs)
    rows = store.cells().set_index("cell_id")
    if criterion is not None:
        from bench.criteria import choose

        result = choose(cands, rows, criterion, budget_s)
    else:
        result = _score(cands, rows, budget_s, float(sel_table.get("tolerance", DEFAULT_TOLERANCE)),
                        scenes=store.scenes() if baselines else None, baselines=baselines)
    path = out or (runs / f"criterion-{criterion}.toml" if criterion is not None else _next_version())
    if path.exists():
        raise BenchError(f"{path} exists; selected-values files are versioned and never overwritten: choose another "
                         "--out (default: the next bench/selected/vN.toml)")
    doc = _document(path, grid, sel_table, tests, result, budget_s, command)
    if criterion is not None:  # what chose; the rule and inert keys below do not apply to a label-free choice
        doc = (f"# Label-free selection (bench/criteria.py): chosen by {criterion}, no label read.\n"
               f"criterion = {_value(criterion)}\n") + doc
    from bench.cache import atomic_write

    atomic_write(path, lambda p: p.write_text(doc))
    for m, r in result.items():
        chosen = ", ".join(f"{k}={v}" for k, v in r["selected"].items())
        shown = f"mean {criterion} {r['score']:.4g}" if criterion is not None else f"mean mIoU {100 * r['score']:.1f}"
        console.print(f"{m}: {chosen} ({shown} over {r['n_cells']} validation cells)"
                      if chosen else f"{m}: {r['outcome']}; defaults kept" + (f" ({r['why']})" if r["why"] else ""))
    console.print(f"wrote {path}")
    return path


def _print_plan(cands: list[Candidate], console, baselines: dict[str, Candidate] | None = None) -> None:
    from rich.table import Table

    t = Table(title="selection plan (grid search)")
    for col in ("method", "candidates", "validation cells", "cells", "TTT steps (all scenes)", "baseline"):
        t.add_column(col, justify="left" if col in ("method", "baseline") else "right")
    by: dict[str, list[Candidate]] = {}
    for c in cands:
        by.setdefault(c.method, []).append(c)
    total_cells = total_steps = 0
    for m, cs in by.items():
        base = (baselines or {}).get(m)
        n = sum(len(c.cells) for c in cs) + (len(base.cells) if base else 0)
        steps = sum(_steps(cell) * cell.test_scenes for c in cs for cell in c.cells)
        total_cells, total_steps = total_cells + n, total_steps + steps
        shown = ", ".join(f"{k}={v}" for k, v in base.params.items()) if base else "none (rule v1)"
        t.add_row(m, str(len(cs)), str(len(cs[0].cells)), str(n), str(steps), shown)
    t.add_row("total", "", "", str(total_cells), str(total_steps), "")
    console.print(t)


def _score(cands: list[Candidate], rows, budget_s: float | None, tolerance: float = DEFAULT_TOLERANCE,
           scenes=None, baselines: dict[str, Candidate] | None = None) -> dict[str, dict]:
    """Per method: every candidate's score (mean cell mIoU), spread, cost and the chosen one.

    The choice: among the candidates within the budget, those whose score is within ``tolerance`` of
    the best score count as tied (on a few validation scenes such differences are noise), and the
    cheapest of them wins: the fewest adaptation steps per scene (recorded per cell, so the choice is
    deterministic, unlike measured seconds), then the higher score, then the first in the space's
    order. With ``tolerance = 0`` the best score wins.

    Rule v2 (a method with a baseline in ``baselines``, whose cells pair with the candidates' cells
    in order; ``scenes``: the scene rows): each candidate is compared with the baseline scene by
    scene (``no_effect``, ``agreement``); inert and diverged candidates are left out of the choice,
    and when none is left the method keeps its defaults (``outcome`` says why)."""
    import numpy as np

    out: dict[str, dict] = {}
    for cd in cands:
        r = rows.loc[[c.cell_id for c in cd.cells]]
        miou = r["miou"].to_numpy(dtype=float)
        per_pair: dict[str, list[float]] = {}
        for c, v in zip(cd.cells, miou):
            per_pair.setdefault(pair_label(c.source, [s.to_dict() for s in c.stream]), []).append(float(v))
        adapt = float(np.mean(r["adapt_s_per_scene"].to_numpy(dtype=float)))
        entry = {"params": cd.params, "score": float(np.mean(miou)),
                 "std": float(np.std(miou, ddof=1)) if len(miou) > 1 else 0.0, "cells": len(miou),
                 "steps_per_scene": float(np.mean(r["steps_per_scene"].to_numpy(dtype=float))),
                 "adapt_s_per_scene": adapt, "within_budget": budget_s is None or adapt <= budget_s,
                 "per_pair": {k: float(np.mean(v)) for k, v in per_pair.items()}}
        m = out.setdefault(cd.method, {"candidates": [], "selected": {}, "fixed": cd.fixed, "score": math.nan,
                                       "best_score": math.nan, "n_cells": len(miou), "outcome": "selected",
                                       "why": "", "baseline": None})
        base = (baselines or {}).get(cd.method)
        if base is not None and scenes is not None:
            b = rows.loc[[c.cell_id for c in base.cells]]
            bscore = float(np.mean(b["miou"].to_numpy(dtype=float)))
            m["baseline"] = {"params": dict(base.params), "score": bscore}
            eff = _compare(cd.cells, base.cells, scenes)
            entry.update(inert=eff.inert, inert_why=eff.why, mean_diff=eff.mean_diff, diff_ci=list(eff.ci),
                         agreement=eff.agreement,
                         diverged=not math.isfinite(entry["score"]) or entry["score"] < DIVERGED * bscore)
        m["candidates"].append(entry)
    for m in out.values():
        ok = [e for e in m["candidates"] if e["within_budget"] and not math.isnan(e["score"])]
        if not ok:
            m["outcome"] = "no candidate within the budget"
            continue
        if m["baseline"] is not None:
            left = [e for e in ok if not e["inert"] and not e["diverged"]]
            n_inert, n_div = sum(e["inert"] for e in ok), sum(e["diverged"] and not e["inert"] for e in ok)
            largest = max((abs(e["mean_diff"]) for e in ok if e["inert"] and math.isfinite(e["mean_diff"])), default=0)
            stable = [e["params"]["lr"] for e in m["candidates"] if "lr" in e["params"] and not e["diverged"]]
            m["largest_stable_lr"] = max(stable) if stable else math.nan
            if not left:
                m["outcome"] = NO_CANDIDATE_DIFFERS
                m["why"] = (f"{n_inert} of {len(ok)} candidates inert against the baseline "
                            f"({', '.join(f'{k}={v}' for k, v in m['baseline']['params'].items())}: equivalent within "
                            f"{100 * INERT_MARGIN:.1f} mIoU points or the same predictions on >= "
                            f"{100 * INERT_AGREE:.0f} % of points; largest mean difference {100 * largest:.3f} "
                            f"points)" + (f", {n_div} diverged" if n_div else ""))
                continue
            ok = left
        best = max(e["score"] for e in ok)
        tied = [e for e in ok if e["score"] >= best - tolerance - 1e-12]
        chosen = min(tied, key=lambda e: (e["steps_per_scene"], -e["score"]))  # min keeps the first of equals
        m["selected"], m["score"], m["best_score"] = dict(chosen["params"]), chosen["score"], best
    return out


def _compare(cells: list, base_cells: list, scenes) -> Effect:
    """A candidate's validation scenes against its baseline's (cell i against baseline cell i, scenes
    paired by name; probe rows left out): ``no_effect`` with the pooled ``agreement``."""
    import pandas as pd

    main = scenes[~scenes["probe"].astype(bool)] if "probe" in scenes else scenes
    parts = []
    for c, b in zip(cells, base_cells):
        x, y = main[main["cell_id"] == c.cell_id], main[main["cell_id"] == b.cell_id]
        parts.append(x.merge(y, on="scene", suffixes=("", "_base")))
    both = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if both.empty:
        return no_effect([], [])
    same = agreement(list(both["pred_sample"]), list(both["pred_sample_base"]), list(both["n_points"])) \
        if "pred_sample" in both else None
    return no_effect(both["miou"].to_numpy(float), both["miou_base"].to_numpy(float),
                     None if same is None or same != same else same)


def _next_version() -> Path:
    found = selection.versions()
    n = int(selection.VERSION.match(found[-1].stem).group(1)) + 1 if found else 1
    return selection.SELECTED_DIR / f"v{n}.toml"


def _document(path: Path, grid, sel_table: dict, tests: list, result: dict, budget_s: float | None,
              command: str) -> str:
    from bench.cache import stable_hash
    from bench.env import git_commit

    seen, validation = set(), []
    for c in grid.all_cells:
        v = {"source": c.source, "target": [s.to_dict() for s in c.stream]}
        k = json.dumps(v, sort_keys=True)
        if k not in seen:
            seen.add(k)
            validation.append(v)
    head = {
        "version": path.stem, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "command": command, "grid": grid.name, "grid_file": _shown_path(grid.path),
        "grid_hash": stable_hash(grid.text), "seeds": list(grid.raw.get("seeds", [0])),
        "allow_source_val": bool(sel_table.get("allow_source_val", True)),
        "checked_against": [g.name for g in tests],
        "validation_pairs": [pair_label(v["source"], v["target"]) for v in validation],
    }
    if budget_s is not None:
        head["budget_s"] = float(budget_s)
    head["tolerance"] = float(sel_table.get("tolerance", DEFAULT_TOLERANCE))
    head["format"] = 2  # v2 files add the rule, each method's outcome, baseline and candidates' inert/diverged flags
    head["rule"] = str(sel_table.get("rule", RULES[-1]))
    if sel_table.get("rule_note"):
        head["rule_note"] = str(sel_table["rule_note"])
    if head["rule"] == "v2":
        head["inert_rule"] = (f"bench.stats.inert: equivalent within {100 * INERT_MARGIN:g} mIoU points (percentile "
                              f"bootstrap interval at alpha {ALPHA:g}, paired per-scene mIoU) or the same predicted "
                              f"class on >= {100 * INERT_AGREE:g} % of sampled points; diverged: score below "
                              f"{DIVERGED:g} x the baseline's")
    lines = ["# Hyper-parameters selected by `python -m bench select` on validation pairs only (never a test pair).",
             "# Grids use these values for the parameters they do not set; rows record hp_source = \"selected:"
             f"{path.stem}\".", ""]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in head.items()]
    for v in validation:
        lines += ["", "[[validation]]", f"source = {_value(v['source'])}", f"target = {_value(v['target'])}"]
    for m, r in result.items():
        lines += ["", f"[methods.{_key(m)}]", f"selected = {_value(r['selected'])}", f"fixed = {_value(r['fixed'])}",
                  f"outcome = {_value(r['outcome'])}"]
        if r["why"]:
            lines.append(f"why = {_value(r['why'])}")
        if r["baseline"] is not None:
            lines.append(f"baseline = {_value(r['baseline'])}")
        if "largest_stable_lr" in r:
            lines.append(f"largest_stable_lr = {_value(r['largest_stable_lr'])}")
        lines += [f"score = {_value(r['score'])}", f"best_score = {_value(r['best_score'])}",
                  f"validation_cells = {r['n_cells']}"]
        for cd in r["candidates"]:
            lines += ["", f"[[methods.{_key(m)}.candidates]]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in cd.items()]
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _value(v: Any) -> str:
    """A TOML value (str, bool, int, float, list, dict as inline table)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    raise BenchError(f"cannot write {v!r} ({type(v).__name__}) to TOML")
