"""The ``--only KEY=VALUE`` filter language of ``bench run``, ``bench select`` and ``bench zoo``: which
cells of a grid a run takes.

A key is any setting a cell carries (``cell_values``: its plain fields, target, backbone and teacher
names, views, the stream protocol) or a parameter of its method; a value is compared as its type
says (``same_value``: numbers as numbers, booleans as true/false, a missing value as none). Filters on
one key are alternatives (repeated, or comma-separated), filters on different keys must all match
(``filter_cells``). An unknown key, a filter that is not KEY=VALUE, or filters that leave no cell
are one BenchError that lists the keys or values the cells have.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from bench.errors import BenchError
from bench.spec import Cell, StreamProtocol

HIDDEN_CELL_FIELDS = ("grid", "recipe_teacher", "recipe_mae", "alias_of")  # derived, not settings to filter on

__all__ = ["cell_values", "same_value", "filter_cells", "check_only", "HIDDEN_CELL_FIELDS"]


def cell_values(cell: Cell) -> dict[str, Any]:
    """What ``--only KEY=VALUE`` selects on: every setting a cell carries (its plain fields: method,
    label, recipe, train_on, source, seed, device, scene counts, predict, cell_id ...; the target label,
    backbone and teacher names, views, lift_tol, the stream protocol's order, order_seed, reset_every,
    probe_every, probe_scenes) and its method's parameters (the config's values). A cell setting wins
    over a method parameter of the same name."""
    params = cell.method_cfg
    if dataclasses.is_dataclass(params):
        params = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    out = {**(params if isinstance(params, dict) else {}), **cell.params}
    for f in dataclasses.fields(cell):
        v = getattr(cell, f.name)
        if f.name not in HIDDEN_CELL_FIELDS and isinstance(v, (str, int, float, bool)):
            out[f.name] = v
    out.update(target=cell.target, test_scenes=cell.test_scenes, views=cell.lift.views, lift_tol=cell.lift.tol,
               backbone=cell.backbone.get("name"), teacher=(cell.teacher or {}).get("name"),
               **dataclasses.asdict(cell.protocol))
    return out


def same_value(got: Any, want: str) -> bool:
    """Does a cell's value equal the text of an ``--only`` filter? Numbers compare as numbers (1e-4 =
    0.0001, 3 = 3.0), booleans as true/false (or 1/0), a missing value as none; the rest as text."""
    if isinstance(got, bool):
        return want.strip().lower() in (("true", "1") if got else ("false", "0"))
    if isinstance(got, (int, float)):
        try:
            return math.isclose(float(got), float(want), rel_tol=1e-9)
        except ValueError:
            return False
    if got is None:
        return want.strip().lower() in ("none", "null", "")
    if isinstance(got, (list, tuple)):
        return want in (str(got), str(list(got)), ",".join(map(str, got)))
    return str(got) == want


def _split_filter(f: str) -> tuple[str, str]:
    if "=" not in f:
        raise BenchError(f"--only '{f}' must be KEY=VALUE, e.g. method=tent or target=synth-s3dis")
    k, v = f.split("=", 1)
    return k.strip(), v.strip()


def _shown(values: set) -> str:
    nums = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    rest = sorted(str(v) for v in values if not (isinstance(v, (int, float)) and not isinstance(v, bool)))
    items = [str(v) for v in nums] + rest
    return ", ".join(items[:30]) + (f", ... ({len(items)} values)" if len(items) > 30 else "")


def filter_cells(cells: list[Cell], only: list[str]) -> list[Cell]:
    """The cells that match the ``--only`` filters (all cells when there is none): filters on one key
    are alternatives (``method=tent --only method=bn_adapt``, or ``method=tent,bn_adapt``: a value that
    does not match as a whole is split at commas, so ``features=color,normal`` still means the list), and
    filters on different keys must all match. An unknown key or filters that leave no cell are a
    BenchError saying which values the cells have."""
    if not only:
        return cells
    check_only(cells, only)
    groups: dict[str, list[str]] = {}
    for f in only:
        k, v = _split_filter(f)
        groups.setdefault(k, []).append(v)

    def one(got: Any, want: str) -> bool:
        return same_value(got, want) or ("," in want and any(same_value(got, w.strip()) for w in want.split(",")))

    left = cells
    for i, (k, wants) in enumerate(groups.items()):
        values = [cell_values(c) for c in left]
        kept = [c for c, vals in zip(left, values) if k in vals and any(one(vals[k], w) for w in wants)]
        if not kept:
            present = {vals[k] if not isinstance(vals[k], list) else tuple(vals[k]) for vals in values if k in vals}
            after = (" among the cells that match " + " ".join(f"{key}={'|'.join(ws)}" for key, ws in
                                                             list(groups.items())[:i])) if i else ""
            why = f"{k} is one of {_shown(present)}{after}" if present else f"no cell has '{k}'{after}"
            raise BenchError(f"--only {' '.join(only)} matches none of the grid's {len(cells)} cells: {why}")
        left = kept
    return left


def check_only(cells: list[Cell], only: list[str]) -> None:
    """Every ``--only`` filter is KEY=VALUE with a key that some cell has (see ``cell_values``)."""
    if not only:
        return
    keys: set[str] = set().union(*(cell_values(c) for c in cells))
    settings = {f.name for f in dataclasses.fields(Cell)} | {f.name for f in dataclasses.fields(StreamProtocol)} | {
        "target", "test_scenes", "views", "lift_tol"}
    for f in only:
        k, _ = _split_filter(f)
        if k not in keys:
            near = difflib.get_close_matches(k, sorted(keys), n=1)
            params = sorted(keys - settings)
            raise BenchError(f"--only: unknown key '{k}'{f' (did you mean {near[0]!r}?)' if near else ''}; the "
                             f"grid's cells have: {', '.join(sorted(keys & settings))}; and the method "
                             f"parameters {', '.join(params) or '(none)'}")
