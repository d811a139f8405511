"""Hyper-parameter selection on validation pairs only (``python -m bench select``), the versioned file
of selected values, and how grids use it.

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

**Use.** ``load_grid`` applies the latest version (or the one a grid's ``selected`` key, the
``--selected`` flag or ``$TTT_BENCH_SELECTED`` names; ``none`` = ignore) to every method table:
the selected and fixed values of the parameters the table does not set (an explicit grid value
always wins) enter the cell's parameters, and its plain form records their origin under ``hp``. A grid whose test
targets overlap the selection's validation pairs is refused. Every result row records the origin
of each value: ``hp_source`` (``selected:vN``, ``grid``, ``default``, joined with ``+`` when they
differ between parameters), ``hp_sources`` (JSON, per parameter), ``hp_selected_on`` (validation
pairs and seeds) and ``hp_selected_at`` (date of the selection).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import PROJECT_ROOT
from bench.errors import BenchError

log = logging.getLogger(__name__)

SELECTED_DIR = Path(__file__).parent / "selected"
ENV_VAR = "TTT_BENCH_SELECTED"
SELECT_KEYS = {"for_grids", "allow_source_val", "space", "tolerance"}
DEFAULT_TOLERANCE = 0.005  # mIoU (0.5 points): candidates this close to the best count as tied, the cheapest wins
_VERSION = re.compile(r"^v(\d+)$")

__all__ = ["Selection", "load_selection", "grid_selection", "apply_selection", "check_grid", "hp_columns",
           "run_selection", "validation_problems", "SELECTED_DIR"]


# --------------------------------------------------------------------------------------------- the file
@dataclass
class Selection:
    """A file of selected values: per method the chosen parameters, and what they were chosen on."""

    path: Path
    version: str
    created_at: str
    validation: list[dict]  # {source, target: [{dataset, split, scenes}]}
    seeds: list[int]
    values: dict[str, dict[str, Any]]  # method name -> selected parameters
    allow_source_val: bool = True
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def tag(self) -> str:
        return f"selected:{self.version}"

    def on(self) -> str:
        """The validation pairs and seeds, as one line (the rows' ``hp_selected_on``)."""
        return "; ".join(pair_label(v["source"], v["target"]) for v in self.validation) + \
            f" (seeds {','.join(str(s) for s in self.seeds)})"


def pair_label(source: str, segments: list[dict]) -> str:
    """``SOURCE->DATASET(split,scenes)`` (segments joined by '>')."""
    return source + "->" + ">".join(f"{s['dataset']}({s.get('split', 'test')},{s.get('scenes')})" for s in segments)


def load_selection(path: Path) -> Selection:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise BenchError(f"selected-values file {path}: cannot read it ({e})") from e
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"selected-values file {path}: not valid TOML ({e}); write it with `python -m bench "
                         "select`") from e
    missing = [k for k in ("created_at", "validation", "seeds", "methods") if k not in raw]
    if missing:
        raise BenchError(f"selected-values file {path}: missing {', '.join(missing)}; it was not written by "
                         "`python -m bench select` (run it to make one)")
    values = {m: {**(t.get("fixed") or {}), **(t.get("selected") or {})} if t.get("selected") else {}
              for m, t in raw["methods"].items()}
    return Selection(path, str(raw.get("version", path.stem)), str(raw["created_at"]), list(raw["validation"]),
                     list(raw["seeds"]), values, bool(raw.get("allow_source_val", True)), raw)


def versions(folder: Path | None = None) -> list[Path]:
    """The ``vN.toml`` files of ``folder`` (default ``SELECTED_DIR``), oldest first."""
    folder = folder or SELECTED_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.glob("v*.toml") if (m := _VERSION.match(p.stem))]
    return [p for _, p in sorted(found)]


def _shown_path(path: Path) -> str:
    """A grid file as the selection file records it: relative to the project for the project's own grids
    (the file is committed; another clone's absolute path means nothing), absolute otherwise."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(Path(path).resolve())


def grid_selection(raw: dict, grid_file: Path, override: str | bool | None = None) -> Selection | None:
    """The selection a grid uses: ``override`` (the ``--selected`` flag), else the grid's ``selected``
    key, else ``$TTT_BENCH_SELECTED``, else the latest ``bench/selected/vN.toml`` (none if there is
    none). Values: ``none``/false (ignore), ``latest``/true, ``vN`` or a file path. A selection grid
    (one with a ``[select]`` table) never uses one."""
    if "select" in raw:
        return None
    if override is not None:
        value, what = override, "--selected"
    elif "selected" in raw:
        value, what = raw["selected"], f"{grid_file}: selected"
    elif os.environ.get(ENV_VAR):
        value, what = os.environ[ENV_VAR], f"${ENV_VAR}"
    else:
        found = versions()
        return load_selection(found[-1]) if found else None
    if value is False or value == "none":
        return None
    if value is True or value == "latest":
        found = versions()
        if not found:
            raise BenchError(f"{what} = latest, but {SELECTED_DIR} holds no selected-values file; run "
                             "`python -m bench select` first, or use selected = \"none\"")
        return load_selection(found[-1])
    if not isinstance(value, str) or not value:
        raise BenchError(f"{what} = {value!r} must be \"none\", \"latest\", a version like \"v1\" or a file path")
    if _VERSION.match(value):
        p = SELECTED_DIR / f"{value}.toml"
        if not p.is_file():
            have = ", ".join(x.stem for x in versions()) or "none"
            raise BenchError(f"{what} = {value!r}: no {p} (versions: {have})")
        return load_selection(p)
    for p in (Path(value).expanduser(), grid_file.parent / value):
        if p.is_file():
            return load_selection(p)
    raise BenchError(f"{what} = {value!r}: no such file (nor a version vN of {SELECTED_DIR}, \"none\" or \"latest\")")


def apply_selection(sel: Selection | None, method: str, table: dict) -> tuple[dict, dict | None]:
    """The method table with the selected values of the parameters it does not set, and the cell's
    provenance record (None when no value was taken from the selection)."""
    if sel is None or not sel.values.get(method):
        return table, None
    taken = {k: v for k, v in sel.values[method].items() if k not in table}
    if not taken:
        return table, None
    from bench.registry import make_config
    from methods import METHODS

    try:
        make_config(METHODS.get(method), taken, "method")
    except BenchError as e:
        raise BenchError(f"selected-values file {sel.path}, method '{method}': {e}; select again (`python -m bench "
                         "select`) or use selected = \"none\"") from None
    hp = {"selected": taken, "from": sel.version, "on": sel.on(), "at": sel.created_at}
    return {**table, **taken}, hp


def hp_columns(cell) -> dict:
    """The provenance columns of a result row: where each searchable or set parameter came from."""
    hp = getattr(cell, "provenance", None) or {}
    chosen = hp.get("selected") or {}
    space = getattr(type(cell.method_cfg), "SEARCH", None) or {}
    sources = {}
    for k in sorted(set(space) | set(cell.params)):
        sources[k] = f"selected:{hp['from']}" if k in chosen else ("grid" if k in cell.params else "default")
    return {"hp_source": "+".join(sorted(set(sources.values()))) or "default",
            "hp_sources": json.dumps(sources, sort_keys=True),
            "hp_selected_on": hp.get("on", "") if chosen else "",
            "hp_selected_at": hp.get("at", "") if chosen else ""}


# ------------------------------------------------------------------------------ validation vs test pairs
def _segment_conflict(vsrc: str, vseg: dict, tseg, allow_source: bool) -> str | None:
    """Why validation segment ``vseg`` (of a pair from ``vsrc``) may not be used beside test segment
    ``tseg`` (of a test cell's stream), or None."""
    from bench.data.datasets import DatasetSpec

    v, t = DatasetSpec.parse(vseg["dataset"]), DatasetSpec.parse(tseg.dataset)
    if v.base != t.base:
        return None
    test = f"test target {tseg.dataset} ({tseg.split} split)"
    held_out = allow_source and v.base == DatasetSpec.parse(vsrc).base and v.corruption and vseg["split"] == "val"
    if not held_out:
        why = ("" if allow_source else " (allow_source_val = false)") if v.base == DatasetSpec.parse(vsrc).base \
            else ""
        return f"its domain {v.base} is the {test}{why}"
    if str(v) == str(t):
        return f"the same corrupted domain {v} is the {test}"
    if tseg.split == "val":
        return f"the {test} reads the same val split of {v.base}"
    return None


def validation_problems(val_cells: list, test_cells: list, allow_source: bool, check_scenes: bool = True) -> list[str]:
    """Every reason why the validation cells' streams may not be used for test cells: a test split, a
    domain a test cell targets (but the held-out source exception), a shared scene."""
    from bench.resources import stream_names

    found: dict[str, list[str]] = {}  # problem -> grids
    pairs = {}
    for c in val_cells:
        pairs.setdefault((c.source, tuple(c.stream)), c)
    tests: dict = {}  # test segment -> the cells that read it
    for c in test_cells:
        for seg in c.stream:
            tests.setdefault(seg, []).append(c)
    for (vsrc, stream), vcell in pairs.items():
        label = pair_label(vsrc, [s.to_dict() for s in stream])
        for vseg in stream:
            if vseg.split == "test":
                found[f"validation pair {label}: {vseg.dataset} reads the test split; validation reads val (or train) "
                      "scenes only: set split = \"val\" in the segment"] = []
                continue
            for tseg, tcells in tests.items():
                why = _segment_conflict(vsrc, vseg.to_dict(), tseg, allow_source)
                if why is None and check_scenes and vseg.spec.base == tseg.spec.base:
                    why = _shared_scenes(vcell, vseg, tcells[0], tseg, stream_names)
                if why and why.startswith("its domain"):
                    why += ("; validate on a domain that no test pair reads (e.g. synth-val) or on corrupted val "
                            "scenes of the pair's own source")
                if why:
                    grids = found.setdefault(f"validation pair {label}: {why}", [])
                    grids += [g for g in dict.fromkeys(c.grid for c in tcells) if g not in grids]
    return [msg + (f" (grid{'s' if len(g) > 1 else ''} {', '.join(g)})" if g else "") for msg, g in found.items()]


def _shared_scenes(vcell, vseg, tcell, tseg, stream_names) -> str | None:
    try:
        vnames = {n for (_, _, names), s in zip(stream_names(vcell), vcell.stream) if s == vseg for n in names}
        tnames = {n for (_, _, names), s in zip(stream_names(tcell), tcell.stream) if s == tseg for n in names}
    except BenchError as e:
        return f"cannot compare its scenes with the test scenes of {tseg.dataset} ({e})"
    shared = sorted(vnames & tnames)
    if shared:
        return (f"{len(shared)} of its scenes ({', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''}) are test "
                f"scenes of {tseg.dataset} ({tseg.split} split)")
    return None


def check_grid(sel: Selection | None, cells: list, grid: str) -> None:
    """A grid may use a selection only if none of its test targets overlaps the selection's
    validation pairs (same rules as ``bench select``; scene names are compared there)."""
    if sel is None or not any(sel.values.values()):
        return
    problems = []
    for v in sel.validation:
        for seg in v["target"]:
            vseg = {"dataset": seg["dataset"], "split": seg.get("split", "test")}
            for c in cells:
                for tseg in c.stream:
                    why = _segment_conflict(v["source"], vseg, tseg, sel.allow_source_val)
                    if why and why not in problems:
                        problems.append(f"{pair_label(v['source'], [seg])}: {why}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems[:10])
        raise BenchError(f"grid '{grid}' tests on data that the selected values of {sel.path} were chosen on:\n"
                         f"{lines}\nuse selected = \"none\" in the grid (or --selected none) to run it with default "
                         "and grid values, or select again on validation pairs that avoid its targets")


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
    return t


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


def expand(grid, sel_table: dict) -> tuple[list[Candidate], list[str]]:
    """Every (method, candidate) with its validation cells; methods with nothing to search are listed apart."""
    from bench.spec import resolve

    cands: dict[tuple[str, str], Candidate] = {}
    skipped: list[str] = []
    fixed: dict[str, dict] = {}
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
    return list(cands.values()), skipped


def _steps(cell) -> int:
    return int(getattr(cell.method_cfg, "steps", 1) or 0)


def run_selection(grid_name: str = "select", out: Path | None = None, runs: Path | None = None,
                  budget_s: float | None = None, executor: str = "inprocess", workers: int = 1,
                  address: str | None = None, only: list[str] | None = None, device: str | None = None,
                  dry_run: bool = False, console=None, command: str = "") -> Path | None:
    """Run the selection grid's candidates on its validation cells and write the selected values.
    Returns the file written (None for a dry run)."""
    from rich.console import Console

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
    cands, skipped = expand(grid, sel_table)
    if skipped:
        log.info("no search space (nothing to select): %s", ", ".join(skipped))
    if not cands:
        raise BenchError(f"{grid.path}: none of its methods has a search space to select (SEARCH in the method's "
                         "config, or a select.space.METHOD table)")
    cells = [c for cd in cands for c in cd.cells]
    shared = {c.model_key() for c in test_cells}
    own = {c.model_key() for c in cells} - shared
    if own:
        log.info("%d model(s) of the validation cells are not models of the test grids and are trained for the "
                 "selection alone (make backbones, [train], train_scenes and seeds match id_ood to share them)",
                 len(own))
    runs = runs or Path("runs") / "select" / grid.name
    if dry_run:
        _print_plan(cands, console)
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
    rows = ResultsStore(runs).cells().set_index("cell_id")
    result = _score(cands, rows, budget_s, float(sel_table.get("tolerance", DEFAULT_TOLERANCE)))
    path = out or _next_version()
    if path.exists():
        raise BenchError(f"{path} exists; selected-values files are versioned and never overwritten: choose another "
                         "--out (default: the next bench/selected/vN.toml)")
    doc = _document(path, grid, sel_table, tests, result, budget_s, command)
    from bench.cache import atomic_write

    atomic_write(path, lambda p: p.write_text(doc))
    for m, r in result.items():
        chosen = ", ".join(f"{k}={v}" for k, v in r["selected"].items())
        console.print(f"{m}: {chosen} (mean mIoU {100 * r['score']:.1f} over {r['n_cells']} validation cells)"
                      if chosen else f"{m}: no candidate within the budget")
    console.print(f"wrote {path}")
    return path


def _print_plan(cands: list[Candidate], console) -> None:
    from rich.table import Table

    t = Table(title="selection plan (grid search)")
    for col in ("method", "candidates", "validation cells", "cells", "TTT steps (all scenes)"):
        t.add_column(col, justify="left" if col == "method" else "right")
    by: dict[str, list[Candidate]] = {}
    for c in cands:
        by.setdefault(c.method, []).append(c)
    total_cells = total_steps = 0
    for m, cs in by.items():
        n = sum(len(c.cells) for c in cs)
        steps = sum(_steps(cell) * cell.test_scenes for c in cs for cell in c.cells)
        total_cells, total_steps = total_cells + n, total_steps + steps
        t.add_row(m, str(len(cs)), str(len(cs[0].cells)), str(n), str(steps))
    t.add_row("total", "", "", str(total_cells), str(total_steps))
    console.print(t)


def _score(cands: list[Candidate], rows, budget_s: float | None,
           tolerance: float = DEFAULT_TOLERANCE) -> dict[str, dict]:
    """Per method: every candidate's score (mean cell mIoU), spread, cost and the chosen one.

    The choice: among the candidates within the budget, those whose score is within ``tolerance`` of
    the best score count as tied (on a few validation scenes such differences are noise), and the
    cheapest of them wins: the fewest adaptation steps per scene (recorded per cell, so the choice is
    deterministic, unlike measured seconds), then the higher score, then the first in the space's
    order. With ``tolerance = 0`` the best score wins."""
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
                                       "best_score": math.nan, "n_cells": len(miou)})
        m["candidates"].append(entry)
    for m in out.values():
        ok = [e for e in m["candidates"] if e["within_budget"] and not math.isnan(e["score"])]
        if not ok:
            continue
        best = max(e["score"] for e in ok)
        tied = [e for e in ok if e["score"] >= best - tolerance - 1e-12]
        chosen = min(tied, key=lambda e: (e["steps_per_scene"], -e["score"]))  # min keeps the first of equals
        m["selected"], m["score"], m["best_score"] = dict(chosen["params"]), chosen["score"], best
    return out


def _next_version() -> Path:
    found = versions()
    n = int(_VERSION.match(found[-1].stem).group(1)) + 1 if found else 1
    return SELECTED_DIR / f"v{n}.toml"


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
    lines = ["# Hyper-parameters selected by `python -m bench select` on validation pairs only (never a test pair).",
             "# Grids use these values for the parameters they do not set; rows record hp_source = \"selected:"
             f"{path.stem}\".", ""]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in head.items()]
    for v in validation:
        lines += ["", "[[validation]]", f"source = {_value(v['source'])}", f"target = {_value(v['target'])}"]
    for m, r in result.items():
        lines += ["", f"[methods.{_key(m)}]", f"selected = {_value(r['selected'])}", f"fixed = {_value(r['fixed'])}",
                  f"score = {_value(r['score'])}", f"best_score = {_value(r['best_score'])}",
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
