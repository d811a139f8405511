"""The selected-values files of ``bench select`` and how grids use them (the library; the command that
writes them is ``bench.select``).

**Use.** ``load_grid`` applies the latest version (or the one a grid's ``selected`` key, the
``--selected`` flag or ``$TTT_BENCH_SELECTED`` names; ``none`` = ignore) to every method table:
the selected and fixed values of the parameters the table does not set (an explicit grid value
always wins) enter the cell's parameters, and its plain form records their origin under ``hp``. A grid whose test
targets overlap the selection's validation pairs is refused. Every result row records the origin
of each value: ``hp_source`` (``selected:vN``, ``grid``, ``default``, joined with ``+`` when they
differ between parameters), ``hp_sources`` (JSON, per parameter), ``hp_selected_on`` (validation
pairs and seeds) and ``hp_selected_at`` (date of the selection).

Validation pairs never touch a test pair: ``validation_problems`` (used by the command before anything
runs) and ``check_grid`` (used by ``load_grid``) share the rules of ``_segment_conflict``; see
``bench.select`` for them.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SELECTED_DIR = Path(__file__).parent / "selected"
ENV_VAR = "TTT_BENCH_SELECTED"
VERSION = re.compile(r"^v(\d+)$")  # the stem of a selected-values file: vN

__all__ = ["Selection", "load_selection", "versions", "grid_selection", "apply_selection", "check_grid",
           "hp_columns", "validation_problems", "pair_label", "SELECTED_DIR", "ENV_VAR"]


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
    notes: dict[str, str] = field(default_factory=dict)  # method -> why its defaults were kept (rule v2)

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
    notes = {m: f"{t['outcome']}; defaults kept" + (f" ({t['why']})" if t.get("why") else "")
             for m, t in raw["methods"].items() if t.get("outcome") not in (None, "selected") and not values[m]}
    return Selection(path, str(raw.get("version", path.stem)), str(raw["created_at"]), list(raw["validation"]),
                     list(raw["seeds"]), values, bool(raw.get("allow_source_val", True)), raw, notes)


def versions(folder: Path | None = None) -> list[Path]:
    """The ``vN.toml`` files of ``folder`` (default ``SELECTED_DIR``), oldest first."""
    folder = folder or SELECTED_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.glob("v*.toml") if (m := VERSION.match(p.stem))]
    return [p for _, p in sorted(found)]



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
    if VERSION.match(value):
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
    if sel is None:
        return table, None
    if not sel.values.get(method):
        if method in sel.notes:  # rule v2 kept the defaults: the rows say so
            return table, {"selected": {}, "from": sel.version, "on": sel.on(), "at": sel.created_at,
                           "note": f"{sel.version}: {sel.notes[method]}"}
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
    """The provenance columns of a result row: where each searchable or set parameter came from, and
    (``hp_note``) why a selection file kept a method's defaults (rule v2), else empty."""
    hp = getattr(cell, "provenance", None) or {}
    chosen = hp.get("selected") or {}
    space = getattr(type(cell.method_cfg), "SEARCH", None) or {}
    sources = {}
    for k in sorted(set(space) | set(cell.params)):
        sources[k] = f"selected:{hp['from']}" if k in chosen else ("grid" if k in cell.params else "default")
    decided = bool(chosen) or bool(hp.get("note"))
    return {"hp_source": "+".join(sorted(set(sources.values()))) or "default",
            "hp_sources": json.dumps(sources, sort_keys=True),
            "hp_selected_on": hp.get("on", "") if decided else "",
            "hp_selected_at": hp.get("at", "") if decided else "",
            "hp_note": hp.get("note", "")}


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
