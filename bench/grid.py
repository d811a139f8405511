"""Grid files (``bench/grids/NAME.toml``) and their expansion into resolved cells (``bench.spec.Cell``).

A grid lists axes: ``backbones``, ``teachers``, ``methods`` (each a table with ``name`` and optional
``label``, ``recipe``, ``train_on`` = "source"|"target", the cell settings ``views``, ``lift_tol`` and
``predict``, and method parameters; a value given as a list is crossed), the targets, ``seeds`` (test
streams of disjoint scenes over one model, and the adaptation's randomness; default [0]),
``model_seeds`` (the source models' training seeds; default [0], the seed of the shipped reference
models; more give model variance), ``train_scenes``, ``val_scenes``, ``test_scenes``, ``device``,
``features``, ``views``, ``lift_tol``, ``predict``, ``[data_options.DATASET]``, ``[domains.NAME]`` (a
synthetic domain defined inline: ``base`` = a built-in domain plus parameter overrides, see
``bench.data.synth.domains``), a ``[train]`` table of recipe settings, and ``selected``: which file of
selected hyper-parameters fills the method parameters the grid does not set ("latest" by default,
"none", "vN" or a path; ``bench.selection``). A ``[select]`` table makes a selection grid.

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

Duplicates are dropped by construction: cells whose configurations are equal (``bench.spec``: same
values whatever their origin; ``views`` at or above a scene's view count is "all"; a method table
that differs from another only in its label) are one cell, the first in grid order. A later
duplicate of the same role is dropped (logged); one of another role (the Oracle on the diagonal:
a model trained on the target evaluated on that target is the Source-Only cell of the pair) is kept
as an *alias* of the first: it is not run, and the runner writes its rows from the first cell's,
marked with ``reported_from`` (``bench.cell.alias_rows``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cache import stable_hash
from bench.errors import BenchError
from bench.only import filter_cells
from bench.roles import role
from bench.spec import (
    CELL_SETTINGS,
    DEFAULTS,
    PROTOCOL_DEFAULTS,
    STREAM_KEYS,
    Cell,
    check_device_name,
    check_features,
    check_predict,
    check_tol,
    check_views,
    describe,
    parse_protocol,
    parse_stream,
    resolve,
    uses_teacher,
)

log = logging.getLogger(__name__)

GRID_DIR = Path(__file__).parent / "grids"
TOP_KEYS = {"name", "description", "backbones", "teachers", "methods", "datasets", "pairs", "streams", "seeds",
            "model_seeds",
            "train_scenes", "val_scenes", "test_scenes", "device", "features", "views", "lift_tol", "predict",
            "train", "data_options", "selected", "select", "reset_every", "domains", "holdout_classes"}
METHOD_KEYS = {"name", "label", "recipe", "train_on"}

__all__ = ["Grid", "Overrides", "load_grid", "grid_path", "describe", "filter_cells", "cell_id"]


@dataclass
class Overrides:
    """Command-line overrides, applied while the grid loads: ``device`` replaces the grid's;
    ``teacher_weights`` (teacher name -> path) sets ``weights`` of every table of that teacher;
    ``data_roots`` (dataset -> path) sets ``[data_options.DATASET] root``; ``only`` (KEY=VALUE filters)
    selects cells; ``selected`` (none, latest, vN or a file) replaces the grid's ``selected`` key (see
    ``bench.selection``). A teacher or dataset that no cell uses, or a filter that matches nothing, is an error."""

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


@dataclass(frozen=True)
class MethodTable:
    """One ``[[methods]]`` entry, parsed once: its position, the table, the registry entry, the recipe
    (the table's or the method's default) and the method parameters (keys other than ``METHOD_KEYS``)."""

    index: int
    table: dict
    entry: Any
    recipe: Any
    params: dict

    @property
    def name(self) -> str:
        return self.table["name"]

    @property
    def needs(self):
        from methods.base import Needs

        return getattr(self.entry.factory, "needs", Needs())

    @property
    def where(self) -> str:
        return f"method '{self.name}' (methods[{self.index}])"


def _method_tables(raw: dict, problems: Problems) -> list[MethodTable]:
    """The grid's method tables whose method exists (the others are reported)."""
    from methods import METHODS

    out = []
    methods = raw.get("methods")
    for i, m in enumerate(methods if isinstance(methods, list) else []):  # not a list: _check_top says so
        m = problems.check(_as_table, m, "methods")
        entry = problems.check(METHODS.get, m["name"]) if m else None
        if entry is not None:
            mt = MethodTable(i, m, entry, None, {k: v for k, v in m.items() if k not in METHOD_KEYS})
            out.append(dataclasses.replace(mt, recipe=m.get("recipe", mt.needs.recipe)))
    return out


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
        # an option at its default stays out of the plain form (the cell's configuration is the same either way)
        out.append((s["source"], s["target"], {k: v for k, v in s.items()
                                               if k in STREAM_KEYS and v != PROTOCOL_DEFAULTS[k]}))
    if not out:
        raise BenchError("no targets: give 'pairs' (or 'datasets' for all pairs) or 'streams'")
    return out


def _check_top(raw: dict, problems: Problems, device_from: str = "device =") -> None:
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
    for key in ("seeds", "model_seeds"):
        seeds = raw.get(key, [0])
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                 and s >= 0 for s in seeds):
            problems.add(f"{key} = {seeds!r} must be a non-empty list of whole numbers >= 0")
        elif len(set(seeds)) != len(seeds):
            problems.add(f"{key} = {seeds!r} lists a seed twice")
    if "views" in raw:
        problems.check(check_views, raw["views"], "grid")
    if "lift_tol" in raw:
        problems.check(check_tol, raw["lift_tol"], "grid")
    if "predict" in raw:
        problems.check(check_predict, raw["predict"], "grid")
    for key, kind in (("train", dict), ("data_options", dict), ("features", list)):
        if key in raw and not isinstance(raw[key], kind):
            problems.add(f"'{key}' must be a {'table' if kind is dict else 'list'}, got {raw[key]!r}")
    if "device" in raw:
        problems.check(check_device_name, raw["device"], device_from)
    if isinstance(raw.get("features"), list):
        problems.check(check_features, raw["features"])
    reset = raw.get("reset_every", 0)
    if not isinstance(reset, int) or isinstance(reset, bool) or reset < 0:
        problems.add(f"reset_every = {reset!r} must be a whole number >= 0 (0 = never)")


def _is_synthetic(base: str) -> bool:
    """A generated (synthetic) dataset: its splits have no fixed scene list, so a scene count of 0
    ("every scene", as for real datasets) means none."""
    from bench.data import DATASETS
    from bench.data.synth import SynthDatasetConfig

    return DATASETS.get(base).config is SynthDatasetConfig


def _check_shared(raw: dict, tables: list[MethodTable], backbones: list[dict], teachers: list[dict], targets: list,
                  problems: Problems) -> None:
    """What every method table of the grid shares (backbones, teachers, targets and their scene counts,
    ``[train]``, ``[data_options]``), checked once so that a problem there is reported once rather than
    once per method table."""
    from backbones import BACKBONES, RECIPES
    from bench.data import DATASETS
    from bench.data.corrupt import CORRUPTIONS
    from bench.data.datasets import DatasetSpec
    from bench.data.synth import SPLIT_SIZES
    from bench.registry import make_config
    from teachers import TEACHERS

    for kind, registry, axis in (("backbone", BACKBONES, backbones), ("teacher", TEACHERS, teachers)):
        for t in axis:
            entry = problems.check(registry.get, t["name"])
            for k, v in t.items() if entry is not None else ():  # each value on its own: one line per bad value
                if k != "name":
                    problems.check(make_config, entry, {k: v}, kind)
    opts = raw.get("data_options", {})
    if isinstance(opts, dict):
        for name, o in opts.items():
            if not isinstance(o, dict):
                problems.add(f"[data_options.{name}] must be a table of options, got {o!r}")
                continue
            entry = problems.check(DATASETS.get, name)
            if entry is not None:
                try:
                    make_config(entry, o, "dataset")
                except BenchError as e:
                    problems.add(f"[data_options.{name}]: {e}")
    train = raw.get("train", {})
    if isinstance(train, dict):  # one message per distinct problem, naming the recipes that read [train]
        by_msg: dict[str, list[str]] = {}
        for mt in tables:
            if not isinstance(mt.recipe, str) or mt.recipe not in RECIPES:
                continue  # reported by _check_methods
            try:
                make_config(RECIPES.get(mt.recipe), train, "recipe")
            except BenchError as e:
                by_msg.setdefault(str(e).replace(f"recipe '{mt.recipe}'", "[train]"), []).append(mt.recipe)
        for msg, recipes in by_msg.items():
            problems.add(f"{msg} (the [train] table of recipe(s) {', '.join(dict.fromkeys(recipes))})")
    test_scenes = raw.get("test_scenes", DEFAULTS["test_scenes"])
    if not isinstance(test_scenes, int) or isinstance(test_scenes, bool) or test_scenes < 0:
        test_scenes = DEFAULTS["test_scenes"]  # reported by _check_top
    all_of: list[str] = []  # synthetic targets that test_scenes = 0 asks every scene of
    for src, tgt, o in targets:
        where = f"pair '{src}->{tgt}'" if isinstance(tgt, str) else f"stream from {src!r}"
        if not isinstance(src, str):
            problems.add(f"{where}: source must be a dataset spec string, got {src!r}")
            continue
        segments = problems.check(parse_stream, tgt, test_scenes, where) or ()
        for i, spec in enumerate([src] + [g.dataset for g in segments]):
            ds = problems.check(DatasetSpec.parse, spec)
            if ds is None or problems.check(DATASETS.get, ds.base) is None:
                continue
            if ds.corruption:
                problems.check(CORRUPTIONS.get, ds.corruption)
                if i == 0:
                    problems.add(f"{where}: source '{src}' is corrupted; corruptions apply to targets only")
            if i > 0 and segments[i - 1].scenes == 0 and _is_synthetic(ds.base):
                most = SPLIT_SIZES.get(segments[i - 1].split, 0)
                if isinstance(tgt, str):
                    all_of.append(ds.base)
                else:
                    problems.add(f"{where}: segment {i} ({spec}) has scenes = 0 (every scene), which applies to "
                                 f"real datasets only; give the synthetic '{ds.base}' scenes = N (1-{most})")
        problems.check(parse_protocol, o, {}, where)
    if all_of:
        problems.add(f"test_scenes = 0 (every test scene) applies to real datasets only; the synthetic "
                     f"{', '.join(dict.fromkeys(all_of))} generate their scenes and have no fixed list: set "
                     f"test_scenes = N (1-{SPLIT_SIZES['test']}, default {DEFAULTS['test_scenes']})")


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
        p = Path(w).expanduser()
        if w != "random-init" and not (p.is_file() or p.is_dir()):
            problems.add(f"--teacher-weights {t}={w}: no such file or folder; give a checkpoint file, a Hugging "
                         "Face snapshot folder, or random-init")


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
    _check_top(raw, problems, "--device" if ov.device is not None else "device =")
    name = raw.get("name", path.stem)
    targets = problems.check(_pairs, raw) or []
    backbones = [t for t in (problems.check(_as_table, b, "backbones") for b in raw.get("backbones") or []) if t]
    teachers = [t for t in (problems.check(_as_table, x, "teachers") for x in raw.get("teachers", []) or []) if t]
    for t in teachers:
        if t["name"] in ov.teacher_weights:
            t["weights"] = ov.teacher_weights[t["name"]]
    tables = _method_tables(raw, problems)  # parsed once; the cells are built from these
    _check_shared(raw, tables, backbones, teachers, targets, problems)
    _check_methods(tables, problems)  # every method parameter once, before any cell is built
    problems.raise_if_any()
    from bench.selection import apply_selection, check_grid, grid_selection

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
    # cell settings given at grid level enter a cell's plain form only when they differ from the default
    # (the identity is built from the resolved configuration, so writing a default changes nothing)
    if raw.get("reset_every", 0) != 0:
        common["reset_every"] = raw["reset_every"]
    if raw.get("holdout_classes"):  # open-set mode (bench.openset); checked by bench.spec.resolve
        common["holdout_classes"] = raw["holdout_classes"]
    for key in ("views", "predict"):
        if key in raw and raw[key] != DEFAULTS[key]:
            common[key] = raw[key]
    test_scenes = raw.get("test_scenes", DEFAULTS["test_scenes"])
    cells: list[Cell] = []
    for mt in tables:
        table, hp = apply_selection(selection, mt.name, mt.params)
        with_teacher = uses_teacher(mt.needs, mt.recipe)
        if with_teacher and not teachers:
            problems.add(f"{mt.where} (recipe {mt.recipe}) needs a teacher; add a 'teachers' list")
            continue
        for p in _cross(table):
            for bb, t, (src, tgt, opts), model_seed, seed in itertools.product(
                    backbones, teachers if with_teacher else [None], targets, raw.get("model_seeds", [0]),
                    raw.get("seeds", [0])):
                plain = {**common, "method": mt.name, "label": mt.table.get("label", mt.name), "params": p,
                         "recipe": mt.recipe, "train_on": mt.table.get("train_on", "source"), "backbone": bb,
                         "teacher": t, "source": src, "target": tgt, "seed": seed, "model_seed": model_seed,
                         "train_cfg": raw.get("train", {}), **opts}
                if isinstance(tgt, str):
                    plain["test_scenes"] = test_scenes
                if hp:
                    plain["hp"] = hp
                c = problems.check(resolve, plain, mt.where)
                if c is not None:
                    cells.append(c)
    problems.raise_if_any()
    cells = one_cell_per_configuration(cells, name)
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
    selected = problems.check(filter_cells, cells, ov.only)  # reported with any problem above
    problems.raise_if_any()
    return Grid(name, path, raw, text, selected, cells)


def cell_role(cell: Cell) -> str:
    return role(cell.method, cell.recipe, cell.train_on, cell.teacher["name"] if cell.teacher else None)


def _written(cell: Cell) -> str:
    """A cell's label and method-table values as the grid wrote them (log lines)."""
    params = ",".join(f"{k}={v}" for k, v in sorted((cell.plain.get("params") or {}).items()))
    return f"{cell.label}({params})" if params else cell.label


def one_cell_per_configuration(cells: list[Cell], grid: str) -> list[Cell]:
    """The cells with duplicates removed (see the module docstring): of cells with one configuration
    (one ``cell_id``) the first is kept; a later one of another role becomes its alias (its rows are
    reported from the first cell's, under its own id), a later one of the same role is dropped."""
    kept: dict[str, Cell] = {}
    dropped: dict[tuple[str, str], int] = {}
    for c in cells:
        first = kept.get(c.cell_id)
        if first is None:
            kept[c.cell_id] = c
            continue
        if cell_role(c) != cell_role(first) and all(cell_role(a) != cell_role(c) for a in first.aliases):
            alias = dataclasses.replace(c, alias_of=first.cell_id,
                                        cell_id=stable_hash({"alias_of": first.cell_id, "role": cell_role(c)}))
            kept[c.cell_id] = dataclasses.replace(first, aliases=first.aliases + (alias,))
            continue
        what = (_written(c), _written(first))
        dropped[what] = dropped.get(what, 0) + 1
    for (a, b), n in dropped.items():
        log.info("grid '%s': %s is the same configuration as %s (%d cell(s)); it runs once, as %s", grid, a, b, n, b)
    return list(kept.values())


def _check_methods(tables: list[MethodTable], problems: Problems) -> None:
    """The method tables against their config dataclasses: names, types, ranges and choices, each value on
    its own (a crossed list value by value), so that every bad value is one line however many cells use
    it; and each table's recipe name. What the tables share ([train], backbones, teachers, targets) is
    checked once by ``_check_shared``. A method without a config whose factory takes ``**kwargs``
    (``bench.registry.open_ended``) accepts any parameter name."""
    from backbones import RECIPES
    from bench.registry import config_fields, make_config, open_ended

    for mt in tables:
        fields = config_fields(mt.entry)
        values = {k: v for k, v in mt.params.items() if k not in CELL_SETTINGS}
        bad = [] if open_ended(mt.entry) else sorted(set(values) - set(fields))
        if bad:
            problems.add(f"method '{mt.name}' has no parameter {', '.join(repr(b) for b in bad)}; valid "
                         f"parameters: {', '.join(sorted(set(fields) | set(CELL_SETTINGS)))}")
        for k, v in values.items():
            if k not in bad:
                for x in v if isinstance(v, list) else [v]:
                    problems.check(make_config, mt.entry, {k: x}, "method")
        problems.check(RECIPES.get, mt.recipe)


def cell_id(cell: dict | Cell) -> str:
    """The id of a cell (a Cell, or a cell's plain form)."""
    from bench.spec import cell_id as _cell_id

    return cell.cell_id if isinstance(cell, Cell) else _cell_id(cell)
