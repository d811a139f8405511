"""Result rows made ready for the report, identified by what the cell ran (never by label text).

* A *row* of the tables is one configuration: the identity columns below (method, its parameters,
  recipe, teacher, backbone, protocol, ...). Its display name is the label plus whatever tells it
  apart (parameters, teacher, backbone, and any other identity column that differs between rows of
  the same label).
* Its *role* ("baseline" | "method" | "control") is the ``role`` column the runner writes, or, for
  results written before that column existed, ``bench.roles.role`` applied to the same columns.
* Parameters become columns ``p_<name>`` so that figures find what a grid varies.
* Each cell is paired with its *baseline cell*: the baseline row's cell with the same model context
  (backbone and its config, source, target, seed, training settings, test scenes); every difference
  against Source-Only is taken on that pair, scene by scene.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.classes import CLASS_ID, NUM_CLASSES
from bench.errors import BenchError
from bench.roles import role
from bench.store import ResultsStore

IDENTITY = ("label", "method", "params", "recipe", "train_on", "teacher", "backbone", "backbone_cfg", "episodic",
            "predict", "n_train", "features", "train_cfg")
CONTEXT = ("backbone", "backbone_cfg", "source", "target", "seed", "n_train", "n_test", "features", "train_cfg")
ROLE_RANK = {"baseline": 0, "method": 1, "control": 2}
# shown in a name only where rows of one label differ in them
_SHOWN = ("method", "recipe", "train_on", "episodic", "predict", "n_train", "features", "train_cfg")


def _params(s) -> dict:
    if isinstance(s, dict):
        return s
    try:
        return json.loads(s) if isinstance(s, str) and s else {}
    except json.JSONDecodeError:
        return {}


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def natural(s: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s)]


def with_roles(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with a filled ``role`` column (computed from the configuration where absent)."""
    cells = cells.copy()
    computed = [role(m, rc, t, te) for m, rc, t, te in
                zip(cells["method"], cells["recipe"], cells["train_on"], cells["teacher"].fillna(""))]
    if "role" in cells:
        have = cells["role"].notna() & cells["role"].astype(str).isin(ROLE_RANK)
        cells["role"] = np.where(have, cells["role"].astype(object), computed)
    else:
        cells["role"] = computed
    return cells


def identity_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in IDENTITY if c in df.columns]


def _names(df: pd.DataFrame) -> pd.Series:
    """A unique display name per configuration (rows of ``df`` with equal identity get equal names)."""
    params = df["params"].map(_params)
    name = df["label"].astype(str) + params.map(
        lambda p: " (" + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(p.items())) + ")" if p else "")
    teacher = df["teacher"].fillna("").astype(str)
    name = name + np.where(teacher.str.len() > 0, " [" + teacher + "]", "")
    if df["backbone"].nunique() > 1:
        name = name + " " + df["backbone"].astype(str)
    elif "backbone_cfg" in df and df["backbone_cfg"].nunique() > 1:
        name = name + " " + df["backbone_cfg"].astype(str)
    ident = identity_columns(df)
    for col in _SHOWN:
        if col not in df:
            continue
        varies = df.groupby(name)[col].transform(lambda s: s.astype(str).nunique() > 1)
        name = name + np.where(varies, f" {col}=" + df[col].astype(str), "")
    clash = df.assign(_n=name).drop_duplicates(ident).groupby("_n").size()
    if (clash > 1).any():
        raise BenchError(f"rows {sorted(clash[clash > 1].index)} differ only in columns the report does not show; "
                         "give them different labels in the grid file")
    return name


@dataclass
class Results:
    """The finished cells of a results folder with role, display name (``row``), parameter columns
    (``p_<name>``), the column key ``col`` = (source, target) and the paired baseline cell id."""

    folder: Path
    cells: pd.DataFrame
    scenes: pd.DataFrame = field(repr=False)

    @classmethod
    def from_frames(cls, cells: pd.DataFrame, scenes: pd.DataFrame | None = None, folder: Path = Path(".")):
        ok = cells[cells["status"] == "ok"].copy() if "status" in cells else cells.copy()
        for col, default in (("params", "{}"), ("teacher", ""), ("recipe", "source"), ("train_on", "source"),
                             ("backbone", ""), ("seed", 0), ("adapt_s_per_scene", np.nan),
                             ("infer_s_per_scene", np.nan)):
            if col not in ok:
                ok[col] = default
        ok["teacher"] = ok["teacher"].fillna("")
        ok["params"] = ok["params"].map(lambda s: json.dumps(_params(s), sort_keys=True))
        ok = with_roles(ok)
        ok["row"] = _names(ok)
        for key in sorted({k for s in ok["params"] for k in _params(s)}):
            ok[f"p_{key}"] = ok["params"].map(lambda s, k=key: _params(s).get(k))
        ok["col"] = list(zip(ok["source"], ok["target"]))
        ok = ok.reset_index(drop=True)
        ok["base_cell"] = _baseline_cells(ok)
        scenes = scenes if scenes is not None else pd.DataFrame()
        if not scenes.empty:
            scenes = scenes[scenes["cell_id"].isin(set(ok["cell_id"]))]
            if "probe" in scenes:  # forgetting-probe rows (clean source scenes) are not target scenes
                scenes = scenes[~scenes["probe"].fillna(False).astype(bool)]
        return cls(Path(folder), ok, scenes)

    # ------------------------------------------------------------------------------ structure
    @cached_property
    def order(self) -> list[str]:
        """Display names: baseline, methods, controls; within a role by the label's adaptation cost
        (cheapest first), then label, then parameters in natural order."""
        c = self.cells
        cost = c.groupby("label")["adapt_s_per_scene"].mean().fillna(0.0)
        first = c.drop_duplicates("row").set_index("row")
        return sorted(first.index, key=lambda r: (ROLE_RANK[first.at[r, "role"]], cost[first.at[r, "label"]],
                                                   str(first.at[r, "label"]), natural(r)))

    @cached_property
    def roles(self) -> dict[str, str]:
        return dict(zip(self.cells["row"], self.cells["role"]))

    @cached_property
    def columns(self) -> list[tuple[str, str]]:
        return sorted(set(self.cells["col"]))

    def ranked(self) -> list[str]:
        """Rows that compete (baselines and methods; never controls)."""
        return [r for r in self.order if self.roles[r] != "control"]

    # ------------------------------------------------------------------------------ per scene
    @cached_property
    def _scenes_by_cell(self) -> dict[str, pd.DataFrame]:
        if self.scenes.empty:
            return {}
        return {cid: g.sort_values("index") for cid, g in self.scenes.groupby("cell_id")}

    def cells_of(self, row: str, col: tuple[str, str]) -> pd.DataFrame:
        c = self.cells
        return c[(c["row"] == row) & (c["col"] == col)].sort_values("seed")

    def per_scene(self, row: str, col: tuple[str, str]) -> pd.DataFrame | None:
        """Per-scene rows of ``row`` on ``col`` over its seeds, indexed by (seed, scene); None if any
        of its cells lacks them."""
        parts = []
        for r in self.cells_of(row, col).itertuples():
            g = self._scenes_by_cell.get(r.cell_id)
            if g is None or g.empty:
                return None
            parts.append(g.assign(seed=r.seed).set_index(["seed", "scene"]))
        return pd.concat(parts) if parts else None

    def classes(self, col: tuple[str, str]) -> tuple[int, ...] | None:
        c = self.cells[self.cells["col"] == col]
        if "eval_classes" not in c or c.empty:
            return None
        return tuple(CLASS_ID[k] for k in str(c["eval_classes"].iloc[0]).split(",") if k)

    def paired(self, rows: list[str], col: tuple[str, str]) -> tuple[list[str], pd.Index, dict[str, pd.DataFrame]]:
        """The rows of ``rows`` that have per-scene data on ``col``, the (seed, scene) pairs they all
        share, and their per-scene frames restricted to those pairs (same order)."""
        frames = {r: self.per_scene(r, col) for r in rows}
        frames = {r: f for r, f in frames.items() if f is not None}
        if not frames:
            return [], pd.Index([]), {}
        common = None
        for f in frames.values():
            common = f.index if common is None else common.intersection(f.index)
        common = common.sort_values()
        return list(frames), common, {r: f.loc[common] for r, f in frames.items()}

    @staticmethod
    def confs(frame: pd.DataFrame) -> np.ndarray:
        """(S, N, C, C) confusion matrices of a per-scene frame indexed by (seed, scene)."""
        seeds = frame.index.get_level_values(0).unique()
        return np.stack([np.stack([np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES)
                                   for c in frame.loc[s]["conf"]]) for s in seeds])

    # ------------------------------------------------------------------------------ baseline
    def delta(self, row: str, col: tuple[str, str]) -> float:
        """Mean over seeds of the cell's mIoU minus its paired baseline cell's (NaN without one)."""
        c = self.cells_of(row, col)
        base = self.cells.set_index("cell_id")["miou"]
        d = [m - base[b] for m, b in zip(c["miou"], c["base_cell"]) if isinstance(b, str)]
        return float(np.mean(d)) if d else float("nan")

    def paired_with_baseline(self, row: str, col: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-scene mIoU of ``row`` and of its baseline on the same (seed, scene) pairs."""
        a, b = [], []
        for r in self.cells_of(row, col).itertuples():
            g, bg = self._scenes_by_cell.get(r.cell_id), self._scenes_by_cell.get(r.base_cell)
            if g is None or bg is None or not isinstance(r.base_cell, str):
                continue
            m = g.merge(bg, on="scene", suffixes=("", "_b"))
            a.append(m["miou"].to_numpy())
            b.append(m["miou_b"].to_numpy())
        if not a:
            return np.array([]), np.array([])
        return np.concatenate(a), np.concatenate(b)


def _baseline_cells(ok: pd.DataFrame) -> pd.Series:
    keys = [c for c in CONTEXT if c in ok]
    base = ok[ok["role"] == "baseline"].drop_duplicates(keys)[keys + ["cell_id"]]
    merged = ok[keys].astype(str).merge(base.astype(str), on=keys, how="left")
    out = merged["cell_id"].where(merged["cell_id"].notna(), None)
    out.index = ok.index
    return out.where(ok["role"] != "baseline", None)


def load(folder: Path) -> Results:
    folder = Path(folder)
    store = ResultsStore(folder)
    cells = store.cells()
    if cells.empty:
        raise BenchError(f"{folder}: no results (cells.parquet missing or empty); run `python -m bench run` first")
    if not (cells["status"] == "ok").any():
        raise BenchError(f"{folder}: every cell failed; see the 'error' column of {folder / 'cells.csv'}")
    return Results.from_frames(cells, store.scenes(), folder)
