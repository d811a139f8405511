"""Grid files (``bench/grids/NAME.toml``) and their expansion into resolved cells (``bench.spec.Cell``).

A grid lists axes: ``backbones``, ``teachers``, ``methods`` (each a table with ``name`` and optional
``label``, ``recipe``, ``train_on`` = "source"|"target", the cell settings ``views``, ``lift_tol`` and
``predict``, and method parameters; a value given as a list is crossed), the targets, ``seeds``,
``train_scenes``, ``val_scenes``, ``test_scenes``, ``device``, ``features``, ``views``, ``lift_tol``,
``predict``, ``[data_options.DATASET]``, ``[domains.NAME]`` (a synthetic domain defined inline: ``base``
= a built-in domain plus parameter overrides, see ``bench.data.synth.domains``), a ``[train]`` table of
recipe settings, and ``selected``: which file of selected hyper-parameters fills the method parameters
the grid does not set ("latest" by default, "none", "vN" or a path; ``bench.select``). A ``[select]``
table makes a selection grid.

Targets are given as ``pairs`` (a list of "SOURCE->TARGET" strings, or ``"all"`` = every ordered pair
of ``datasets`` including the in-distribution diagonal: each a one-segment stream of the target's
test split), and/or as ``streams``: tables ``{source = "A", target = [{dataset = "B", split = "test",
scenes = 6}, {dataset = "C"}, ...]}`` whose segments a cell runs in order without reset beyond the
method's own protocol (continual, gradual or mixed scenarios are such lists). A stream table may also
set the scenario options of ``bench.spec.StreamProtocol``: ``order``, ``order_seed``, ``probe_every``,
``probe_scenes`` (``reset_every`` is a cell setting: top level or in a method table).

A teacher axis only multiplies cells that use a teacher (a teacher-trained recipe, or a method whose
``needs.teacher`` is set); other cells get no teacher. Loading validates everything a run will use
and reports every problem at once.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.spec import (
    CELL_SETTINGS,
    DEFAULTS,
    PROTOCOL_DEFAULTS,
    STREAM_KEYS,
    Cell,
    check_predict,
    check_tol,
    check_views,
    describe,
    resolve,
    uses_teacher,
)

GRID_DIR = Path(__file__).parent / "grids"
TOP_KEYS = {"name", "description", "backbones", "teachers", "methods", "datasets", "pairs", "streams", "seeds",
            "train_scenes", "val_scenes", "test_scenes", "device", "features", "views", "lift_tol", "predict",
            "train", "data_options", "selected", "select", "reset_every", "domains"}
METHOD_KEYS = {"name", "label", "recipe", "train_on"}
ONLY_KEYS = ("method", "label", "source", "target", "backbone", "teacher", "seed", "recipe", "views", "predict")

__all__ = ["Grid", "Overrides", "load_grid", "grid_path", "describe", "matches", "cell_id"]


@dataclass
class Overrides:
    """Command-line overrides, applied while the grid loads: ``device`` replaces the grid's;
    ``teacher_weights`` (teacher name -> path) sets ``weights`` of every table of that teacher;
    ``data_roots`` (dataset -> path) sets ``[data_options.DATASET] root``; ``only`` (KEY=VALUE filters)
    selects cells; ``selected`` (none, latest, vN or a file) replaces the grid's ``selected`` key (see
    ``bench.select``). A teacher or dataset that no cell uses, or a filter that matches nothing, is an error."""

    device: str | None = None
    selected: str | None = None
    teacher_weights: dict[str, str] = field(default_factory=dict)
    data_roots: dict[str, str] = field(default_factory=dict)
    only: list[str] = field(default_factory=list)


@dataclass
class Grid:
    name: str
    path: Path
    raw: dict
    text: str
    cells: list[Cell] = field(default_factory=list)  # the selected cells (all, unless --only)
    all_cells: list[Cell] = field(default_factory=list)


class Problems:
    """Collects the problems of a grid so that all are reported at once, one line each."""

    def __init__(self, path: Path):
        self.path, self.items = path, []

    def add(self, msg: str) -> None:
        if msg not in self.items:
            self.items.append(msg)

    def check(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except BenchError as e:
            self.add(str(e))
            return None

    def raise_if_any(self) -> None:
        if self.items:
            if len(self.items) == 1:
                raise BenchError(f"{self.path}: {self.items[0]}")
            lines = "\n".join(f"  - {m}" for m in self.items)
            raise BenchError(f"{self.path}: {len(self.items)} problems:\n{lines}")


def grid_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        return p
    q = GRID_DIR / f"{name_or_path}.toml"
    if q.is_file():
        return q
    avail = ", ".join(sorted(x.stem for x in GRID_DIR.glob("*.toml")))
    raise BenchError(f"grid '{name_or_path}' not found (neither a .toml file nor one of: {avail})")


def _as_table(x, what: str) -> dict:
    if isinstance(x, str):
        return {"name": x}
    if isinstance(x, dict) and isinstance(x.get("name"), str):
        return dict(x)
    raise BenchError(f"each entry of '{what}' must be a name or a table with a 'name' key, got {x!r}")


def _cross(params: dict) -> list[dict]:
    keys = sorted(params)
    vals = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*vals)]


def _pairs(raw: dict) -> list[tuple[str, Any, dict]]:
    """(source, target, stream options) of every target: pairs give a target spec string and no
    options, streams a spec or a list of segments and their scenario options (``STREAM_KEYS``)."""
    datasets = raw.get("datasets", [])
    pairs_raw = raw.get("pairs", "all" if "streams" not in raw else [])
    out: list[tuple[str, Any]] = []
    if pairs_raw == "all":
        if not datasets or not isinstance(datasets, list):
            raise BenchError("pairs = 'all' needs a 'datasets' list")
        out += [(a, b, {}) for a in datasets for b in datasets]
    elif isinstance(pairs_raw, list):
        for p in pairs_raw:
            if isinstance(p, str) and "->" in p:
                a, b = (s.strip() for s in p.split("->", 1))
            elif isinstance(p, list) and len(p) == 2:
                a, b = p
            else:
                raise BenchError(f"pair {p!r} must be 'SOURCE->TARGET' or [SOURCE, TARGET]")
            out.append((a, b, {}))
    else:
        raise BenchError("'pairs' must be 'all' or a list of 'SOURCE->TARGET'")
    streams = raw.get("streams", [])
    if not isinstance(streams, list):
        raise BenchError("'streams' must be a list of tables {source = ..., target = [segments]}")
    for i, s in enumerate(streams):
        if not isinstance(s, dict) or not {"source", "target"} <= set(s) or set(s) - {"source", "target",
                                                                                       *STREAM_KEYS}:
            raise BenchError(f"streams[{i}] must be a table with 'source' and 'target' (a dataset spec or a list of "
                             f"{{dataset, split, scenes}} segments) and optionally {', '.join(STREAM_KEYS)}; "
                             f"got {s!r}")
        # an option at its default stays out of the plain form (the cell id does not change)
        out.append((s["source"], s["target"], {k: v for k, v in s.items()
                                               if k in STREAM_KEYS and v != PROTOCOL_DEFAULTS[k]}))
    if not out:
        raise BenchError("no targets: give 'pairs' (or 'datasets' for all pairs) or 'streams'")
    return out


def _check_top(raw: dict, problems: Problems) -> None:
    bad = sorted(set(raw) - TOP_KEYS)
    if bad:
        problems.add(f"unknown key(s) {', '.join(bad)}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    for key in ("backbones", "methods"):
        if not raw.get(key) or not isinstance(raw.get(key), list):
            problems.add(f"'{key}' is missing or empty")
    for key in ("train_scenes", "val_scenes", "test_scenes"):
        v = raw.get(key, DEFAULTS[key])
        if not isinstance(v, int) or isinstance(v, bool):
            problems.add(f"{key} = {v!r} must be a whole number")
        elif key == "test_scenes" and v < 0:
            problems.add(f"test_scenes = {v} must be >= 1 (or 0 = every test scene of a real dataset)")
        elif v < 0:
            problems.add(f"{key} = {v} must be >= 0 (0 = {'none' if key == 'val_scenes' else 'all'})")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in seeds):
        problems.add(f"seeds = {seeds!r} must be a non-empty list of whole numbers")
    if "views" in raw:
        problems.check(check_views, raw["views"], "grid")
    if "lift_tol" in raw:
        problems.check(check_tol, raw["lift_tol"], "grid")
    if "predict" in raw:
        problems.check(check_predict, raw["predict"], "grid")
    for key, kind in (("train", dict), ("data_options", dict), ("features", list)):
        if key in raw and not isinstance(raw[key], kind):
            problems.add(f"'{key}' must be a {'table' if kind is dict else 'list'}, got {raw[key]!r}")


def _apply_overrides(raw: dict, ov: Overrides, problems: Problems) -> None:
    if ov.device is not None:
        raw["device"] = ov.device
    if ov.data_roots:
        opts = {k: dict(v) for k, v in (raw.get("data_options") or {}).items()} if isinstance(
            raw.get("data_options"), dict) else {}
        for ds, root in ov.data_roots.items():
            if not Path(root).expanduser().is_dir():
                problems.add(f"--data-root {ds}={root}: {root} is not a folder")
            opts[ds] = {**opts.get(ds, {}), "root": root}
        raw["data_options"] = opts
    for t, w in ov.teacher_weights.items():
        if w != "random-init" and not Path(w).expanduser().is_file():
            problems.add(f"--teacher-weights {t}={w}: no such file")


def _inline_domains(raw: dict, problems: Problems) -> None:
    """``[domains.NAME]`` tables (``base`` = a built-in synthetic domain, plus parameter overrides):
    each becomes a dataset NAME usable as a source or target of this grid; its parameters go into
    ``[data_options.NAME] domain`` so every cell (in any worker) rebuilds the same domain."""
    domains = raw.get("domains")
    if domains is None:
        return
    if not isinstance(domains, dict):
        problems.add(f"'domains' must be tables [domains.NAME] with base = \"synth-...\", got {domains!r}")
        return
    from bench.data.synth import register_inline_domain

    opts = raw.get("data_options") if isinstance(raw.get("data_options"), dict) else {}
    opts = {k: dict(v) if isinstance(v, dict) else v for k, v in opts.items()}
    for name, spec in domains.items():
        made = problems.check(register_inline_domain, name, spec)
        if made is not None:
            user = opts.get(name) if isinstance(opts.get(name), dict) else {}
            opts[name] = {**user, "domain": {**made["domain"], **(user.get("domain") or {})}}
    raw["data_options"] = opts


def load_grid(name_or_path: str, overrides: Overrides | dict | None = None) -> Grid:
    """Read, validate and expand a grid into resolved cells, applying the command line's overrides.
    Every problem found (types, ranges, names, unknown keys, overrides no cell uses) is reported in
    one BenchError, one line each."""
    from bench.data.datasets import DatasetSpec
    from methods import METHODS
    from methods.base import Needs

    ov = overrides if isinstance(overrides, Overrides) else Overrides(**(overrides or {}))
    path = grid_path(name_or_path)
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{path}: not valid TOML ({e})") from e
    problems = Problems(path)
    _apply_overrides(raw, ov, problems)
    _inline_domains(raw, problems)
    _check_top(raw, problems)
    name = raw.get("name", path.stem)
    targets = problems.check(_pairs, raw) or []
    backbones = [t for t in (problems.check(_as_table, b, "backbones") for b in raw.get("backbones") or []) if t]
    teachers = [t for t in (problems.check(_as_table, x, "teachers") for x in raw.get("teachers", []) or []) if t]
    for t in teachers:
        if t["name"] in ov.teacher_weights:
            t["weights"] = ov.teacher_weights[t["name"]]
    _check_configs(raw, backbones, problems)  # every parameter once, before any cell is built
    problems.raise_if_any()
    from bench.select import apply_selection, check_grid, grid_selection

    selection = problems.check(grid_selection, raw, path, ov.selected)  # defaults that the grid may override
    problems.raise_if_any()

    common = {
        "grid": name,
        "train_scenes": raw.get("train_scenes", DEFAULTS["train_scenes"]),
        "val_scenes": raw.get("val_scenes", DEFAULTS["val_scenes"]),
        "device": raw.get("device", DEFAULTS["device"]),
        "features": list(raw.get("features", DEFAULTS["features"])),
        "lift_tol": float(raw.get("lift_tol", DEFAULTS["lift_tol"])),
        "data_options": raw.get("data_options", {}),
    }
    # cell settings given at grid level enter a cell's plain form only when they differ from the
    # default (so grids written before these settings existed keep their cell ids)
    if raw.get("reset_every", 0) != 0:
        common["reset_every"] = raw["reset_every"]
    for key in ("views", "predict"):
        if key in raw and raw[key] != DEFAULTS[key]:
            common[key] = raw[key]
    test_scenes = raw.get("test_scenes", DEFAULTS["test_scenes"])
    cells: list[Cell] = []
    for mi, m in enumerate(raw.get("methods") or []):
        m = problems.check(_as_table, m, "methods")
        if m is None:
            continue
        where = f"method '{m['name']}' (methods[{mi}])"
        entry = problems.check(METHODS.get, m["name"])
        if entry is None:
            continue
        table = {k: v for k, v in m.items() if k not in METHOD_KEYS}
        table, hp = apply_selection(selection, m["name"], table)
        needs = getattr(entry.factory, "needs", Needs())
        recipe = m.get("recipe", needs.recipe)
        with_teacher = uses_teacher(needs, recipe)
        if with_teacher and not teachers:
            problems.add(f"{where} (recipe {recipe}) needs a teacher; add a 'teachers' list")
            continue
        for p in _cross(table):
            for bb, t, (src, tgt, opts), seed in itertools.product(backbones, teachers if with_teacher else [None],
                                                             targets, raw.get("seeds", [0])):
                plain = {**common, "method": m["name"], "label": m.get("label", m["name"]), "params": p,
                         "recipe": recipe, "train_on": m.get("train_on", "source"), "backbone": bb,
                         "teacher": t, "source": src, "target": tgt, "seed": seed, "train_cfg": raw.get("train", {}),
                         **opts}
                if isinstance(tgt, str):
                    plain["test_scenes"] = test_scenes
                if hp:
                    plain["hp"] = hp
                c = problems.check(resolve, plain, where)
                if c is not None:
                    cells.append(c)
    problems.raise_if_any()
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise BenchError(f"{path}: some cells are listed twice (same method, parameters and axes)")
    problems.check(check_grid, selection, cells, name)

    # overrides that no cell uses are mistakes: say which cells would use them
    used_teachers = {c.teacher["name"] for c in cells if c.teacher}
    for t in ov.teacher_weights:
        if t not in used_teachers:
            users = sorted({c.label for c in cells if c.uses_teacher})
            problems.add(f"--teacher-weights {t}=...: no cell of this grid uses teacher '{t}' (its teachers: "
                         f"{', '.join(sorted(used_teachers)) or 'none'}); add '{t}' to the grid's 'teachers' list, "
                         f"which the teacher-using methods ({', '.join(users) or 'none in this grid'}) then cross")
    used_data = {DatasetSpec.parse(s).base for c in cells for s in [c.source] + [g.dataset for g in c.stream]}
    for ds in ov.data_roots:
        if ds not in used_data:
            problems.add(f"--data-root {ds}=...: no cell of this grid reads dataset '{ds}' "
                         f"(it reads: {', '.join(sorted(used_data))})")
    problems.check(check_only, cells, ov.only)
    selected = [c for c in cells if matches(c, ov.only)] if ov.only and not problems.items else cells
    if ov.only and not selected and not problems.items:
        problems.add(f"--only {' '.join(ov.only)} matches none of the grid's {len(cells)} cells")
    problems.raise_if_any()
    return Grid(name, path, raw, text, selected, cells)


def _check_configs(raw: dict, backbones: list[dict], problems: Problems) -> None:
    """The method tables, the ``[train]`` table (against the recipe of every method) and the backbone
    tables against their config dataclasses: names, types, ranges and choices, each value on its own
    (a crossed list value by value), so that every bad value is one line however many cells use it."""
    from backbones import BACKBONES, RECIPES
    from bench.registry import config_fields, make_config
    from methods import METHODS
    from methods.base import Needs

    recipes = {}
    for m in raw.get("methods") or []:
        m = problems.check(_as_table, m, "methods")
        entry = problems.check(METHODS.get, m["name"]) if m else None
        if entry is None:
            continue
        fields = config_fields(entry)
        table = {k: v for k, v in m.items() if k not in METHOD_KEYS and k not in CELL_SETTINGS}
        bad = sorted(set(table) - set(fields))
        if bad:
            problems.add(f"method '{m['name']}' has no parameter {', '.join(repr(b) for b in bad)}; valid "
                         f"parameters: {', '.join(sorted(set(fields) | set(CELL_SETTINGS)))}")
        for k, v in table.items():
            if k in fields:
                for x in v if isinstance(v, list) else [v]:
                    problems.check(make_config, entry, {k: x}, "method")
        recipe = problems.check(RECIPES.get, m.get("recipe", getattr(entry.factory, "needs", Needs()).recipe))
        if recipe is not None:
            recipes[recipe.name] = recipe
    train = raw.get("train", {})
    train = train if isinstance(train, dict) else {}  # else _check_top says so
    found: dict[str, list[str]] = {}  # a bad [train] value gives the same message for every recipe: say it once
    for recipe in recipes.values():
        for k, v in train.items():
            try:
                make_config(recipe, {k: v}, "recipe")
            except BenchError as e:
                msg, prefix = str(e), f"recipe '{recipe.name}': "
                if msg.startswith(prefix):
                    found.setdefault(msg[len(prefix):], []).append(recipe.name)
                else:
                    problems.add(f"[train]: {msg}")
    for msg, names in found.items():
        problems.add(f"[train]: recipe{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)}: {msg}")
    for bb in backbones:
        entry = problems.check(BACKBONES.get, bb["name"])
        if entry is not None:
            for k, v in bb.items():
                if k != "name":
                    problems.check(make_config, entry, {k: v}, "backbone")


def cell_id(cell: dict | Cell) -> str:
    """The id of a cell (a Cell, or a cell's plain form)."""
    from bench.spec import cell_id as _cell_id

    return cell.cell_id if isinstance(cell, Cell) else _cell_id(cell)


def matches(cell: Cell, only: list[str]) -> bool:
    """``--only key=value``: every filter must match (value compared as text; method, label, source,
    target, backbone, teacher, seed, recipe, views, predict, or a method parameter)."""
    for f in only:
        if "=" not in f:
            raise BenchError(f"--only '{f}' must be KEY=VALUE, e.g. method=tent or target=synth-s3dis")
        k, v = f.split("=", 1)
        if k in ("backbone", "teacher"):
            got = (getattr(cell, k) or {}).get("name")
        elif k == "views":
            got = cell.lift.views
        elif k in ONLY_KEYS:
            got = getattr(cell, k)
        elif k in cell.params:
            got = cell.params[k]
        elif hasattr(cell.method_cfg, k):
            got = getattr(cell.method_cfg, k)
        else:
            return False  # a parameter of other methods (check_only says whether any cell has it)
        if str(got) != v:
            return False
    return True


def check_only(cells: list[Cell], only: list[str]) -> None:
    """Every ``--only`` filter is KEY=VALUE with a key that some cell knows."""
    for f in only:
        if "=" not in f:
            raise BenchError(f"--only '{f}' must be KEY=VALUE, e.g. method=tent or target=synth-s3dis")
        k = f.split("=", 1)[0]
        if k not in ONLY_KEYS and k not in ("backbone", "teacher") and not any(
                k in c.params or hasattr(c.method_cfg, k) for c in cells):
            raise BenchError(f"--only: unknown key '{k}'; use {', '.join(ONLY_KEYS)}, or a parameter of one of "
                             "the grid's methods")
