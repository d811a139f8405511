"""Grid files (``bench/grids/NAME.toml``) and their expansion into cells.

A grid lists axes: ``backbones``, ``teachers``, ``methods`` (each a table with ``name`` and optional
``label``, ``recipe``, ``train_on`` = "source"|"target", and parameters; a parameter given as a list
is crossed), source->target ``pairs`` (a list of "A->B" strings or ``"all"`` = every ordered pair of
``datasets`` including the in-distribution diagonal), ``seeds``, ``train_scenes``, ``val_scenes``,
``test_scenes``, ``device``, ``features``, ``lift_tol``, and a ``[train]`` table of recipe settings.
A teacher axis only multiplies cells that use a teacher (a ``joint-kd`` recipe or a teacher-based
method); other cells get ``teacher = None``.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench.cache import stable_hash
from bench.errors import BenchError

GRID_DIR = Path(__file__).parent / "grids"
TOP_KEYS = {"name", "description", "backbones", "teachers", "methods", "datasets", "pairs", "seeds",
            "train_scenes", "val_scenes", "test_scenes", "device", "features", "lift_tol", "train",
            "data_options"}
METHOD_KEYS = {"name", "label", "recipe", "train_on"}


@dataclass
class Grid:
    name: str
    path: Path
    raw: dict
    text: str
    cells: list[dict] = field(default_factory=list)


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
    if isinstance(x, dict) and "name" in x:
        return dict(x)
    raise BenchError(f"each entry of '{what}' must be a name or a table with a 'name' key, got {x!r}")


def _cross(params: dict) -> list[dict]:
    keys = sorted(params)
    vals = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*vals)]


def load_grid(name_or_path: str, overrides: dict | None = None) -> Grid:
    """Read, validate and expand a grid. ``overrides`` replace top-level keys (e.g. device)."""
    from backbones import BACKBONES, RECIPES
    from bench.data import DATASETS
    from bench.data.datasets import DatasetSpec
    from bench.registry import make_config
    from methods import METHODS
    from teachers import TEACHERS

    path = grid_path(name_or_path)
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{path}: not valid TOML ({e})") from e
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    bad = sorted(set(raw) - TOP_KEYS)
    if bad:
        raise BenchError(f"{path}: unknown key(s) {', '.join(bad)}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    for key in ("backbones", "methods"):
        if not raw.get(key):
            raise BenchError(f"{path}: '{key}' is missing or empty")
    name = raw.get("name", path.stem)

    backbones = [_as_table(b, "backbones") for b in raw["backbones"]]
    for b in backbones:
        entry = BACKBONES.get(b["name"])
        make_config(entry, {k: v for k, v in b.items() if k != "name"}, "backbone")
    teachers = [_as_table(t, "teachers") for t in raw.get("teachers", [])]
    for t in teachers:
        TEACHERS.get(t["name"])

    # pairs
    datasets = raw.get("datasets", [])
    pairs_raw = raw.get("pairs", "all")
    if pairs_raw == "all":
        if not datasets:
            raise BenchError(f"{path}: pairs = 'all' needs a 'datasets' list")
        pairs = [(a, b) for a in datasets for b in datasets]
    elif isinstance(pairs_raw, list):
        pairs = []
        for p in pairs_raw:
            if isinstance(p, str) and "->" in p:
                a, b = (s.strip() for s in p.split("->", 1))
            elif isinstance(p, list) and len(p) == 2:
                a, b = p
            else:
                raise BenchError(f"{path}: pair {p!r} must be 'SOURCE->TARGET' or [SOURCE, TARGET]")
            pairs.append((a, b))
    else:
        raise BenchError(f"{path}: 'pairs' must be 'all' or a list of 'SOURCE->TARGET'")
    for a, b in pairs:
        for spec in (a, b):
            ds = DatasetSpec.parse(spec)
            DATASETS.get(ds.base)
            if ds.corruption:
                from bench.data.corrupt import CORRUPTIONS

                CORRUPTIONS.get(ds.corruption)
        if DatasetSpec.parse(a).corruption:
            raise BenchError(f"{path}: source '{a}' is corrupted; corruptions apply to targets only")

    train_cfg = raw.get("train", {})
    common = {
        "grid": name,
        "train_scenes": int(raw.get("train_scenes", 16)),
        "val_scenes": int(raw.get("val_scenes", 2)),
        "test_scenes": int(raw.get("test_scenes", 8)),
        "device": raw.get("device", "cpu"),
        "features": list(raw.get("features", ["color", "normal"])),
        "lift_tol": float(raw.get("lift_tol", 0.1)),
        "data_options": raw.get("data_options", {}),
    }
    cells = []
    for m in raw["methods"]:
        m = _as_table(m, "methods")
        entry = METHODS.get(m["name"])
        params = {k: v for k, v in m.items() if k not in METHOD_KEYS}
        recipe = m.get("recipe", entry.extra.get("recipe", "source"))
        recipe_entry = RECIPES.get(recipe)
        train_on = m.get("train_on", "source")
        if train_on not in ("source", "target"):
            raise BenchError(f"{path}: method '{m['name']}': train_on must be 'source' or 'target', got {train_on!r}")
        uses_teacher = bool(entry.extra.get("teacher")) or bool(recipe_entry.extra.get("teacher"))
        if uses_teacher and not teachers:
            raise BenchError(f"{path}: method '{m['name']}' (recipe {recipe}) needs a teacher; add a 'teachers' list")
        make_config(recipe_entry, train_cfg, "recipe")
        for p in _cross(params):
            make_config(entry, p, "method")
            label = m.get("label", m["name"])
            for bb, t, (src, tgt), seed in itertools.product(
                    backbones, teachers if uses_teacher else [None], pairs, raw.get("seeds", [0])):
                cell = {**common, "method": m["name"], "label": label, "params": p, "recipe": recipe,
                        "train_on": train_on, "backbone": bb, "teacher": t, "source": src, "target": tgt,
                        "seed": int(seed), "train_cfg": train_cfg}
                cell["cell_id"] = cell_id(cell)
                cells.append(cell)
    ids = [c["cell_id"] for c in cells]
    if len(set(ids)) != len(ids):
        raise BenchError(f"{path}: some cells are listed twice (same method, parameters and axes)")
    return Grid(name, path, raw, text, cells)


def cell_id(cell: dict) -> str:
    """Identifies a cell by everything that can change its numbers (not its label or grid name)."""
    return stable_hash({k: v for k, v in cell.items() if k not in ("grid", "label", "cell_id")})


def describe(cell: dict) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(cell["params"].items()))
    t = f" [{cell['teacher']['name']}]" if cell["teacher"] else ""
    return (f"{cell['label']}{'(' + params + ')' if params else ''}{t} {cell['backbone']['name']} "
            f"{cell['source']}->{cell['target']} s{cell['seed']}")


def matches(cell: dict, only: list[str]) -> bool:
    """``--only key=value``: every filter must match (value compared as text; method, label, source,
    target, backbone, teacher, seed, or a method parameter)."""
    for f in only:
        if "=" not in f:
            raise BenchError(f"--only '{f}' must be KEY=VALUE, e.g. method=tent or target=synth-s3dis")
        k, v = f.split("=", 1)
        if k in ("backbone", "teacher"):
            got = (cell[k] or {}).get("name")
        elif k in cell:
            got = cell[k]
        elif k in cell["params"]:
            got = cell["params"][k]
        else:
            raise BenchError(f"--only: unknown key '{k}'; use method, label, source, target, backbone, teacher, "
                             "seed, or a method parameter")
        if str(got) != v:
            return False
    return True
