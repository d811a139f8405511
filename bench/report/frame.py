"""Result rows made ready for the report, identified by what the cell ran (never by label text).

* A *row* of the tables is one configuration: the identity columns below (method, its parameters,
  recipe, teacher, backbone, protocol, ...). Its display name is the label plus whatever tells it
  apart (parameters, teacher, backbone, and any other identity column that differs between rows of
  the same label).
* Its *role* ("baseline" | "method" | "control") is the ``role`` column the runner writes, or, for
  results written before that column existed, ``bench.roles.role`` applied to the same columns.
* Parameters become columns ``p_<name>`` so that figures find what a grid varies.
* Each cell is paired with its *baseline cell* (the Source-Only row's cell) and its *BN cell* (the
  BN-Adapt row's cell, method ``bn_adapt``; with several BN-Adapt configurations the one with the
  fewest parameters set) of the same model context (backbone and its config, source, target, model
  seed, seed, training settings, test scenes); every difference against them is taken on that pair,
  scene by scene.
* Scores are recomputed from the per-scene confusion matrices with the current scoring rule
  (``bench.metrics``: a class without a ground-truth point is not scored; ``bench.rescore``),
  so a folder written under an earlier rule reads the same as a new one; each cell also gets its
  structure mIoU (wall, floor, ceiling), object mIoU (every other class) and, where the scenes
  carry calibration histograms, its pooled ECE.
* Replication: a per-scene value is keyed by (model seed, seed, scene). Rows without a
  ``model_seed`` column were written before protocol v3, when each seed trained its own model and
  reused the same test scenes: their model seed is their seed (``bench.stats.Design`` then resamples
  seeds and the shared scenes crossed).
* *Inert* rows ("no effect at these settings", ``bench.stats.inert``): a non-baseline row whose
  per-scene results are indistinguishable from Source-Only's or from BN-Adapt's in every column
  where they meet; such rows are shown, marked, and neither ranked nor put in a bold group.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bench import rescore, stats
from bench.data.classes import CLASS_ID, CLASSES, NUM_CLASSES
from bench.errors import BenchError
from bench.roles import role
from bench.store import ResultsStore

IDENTITY = ("label", "method", "params", "recipe", "train_on", "teacher", "backbone", "backbone_cfg", "episodic",
            "predict", "n_train", "features", "train_cfg")
CONTEXT = ("backbone", "backbone_cfg", "source", "target", "model_seed", "seed", "n_train", "n_test", "features",
           "train_cfg")
ROLE_RANK = {"baseline": 0, "method": 1, "control": 2}
# shown in a name only where rows of one label differ in them
_SHOWN = ("method", "recipe", "train_on", "episodic", "predict", "n_train", "features", "train_cfg")
BN_METHOD = "bn_adapt"  # the statistics-only row: "beyond statistics" gains are taken against it
STRUCTURE = ("wall", "floor", "ceiling")
GROUPS = {"structure": tuple(CLASS_ID[c] for c in STRUCTURE),
          "object": tuple(i for i, c in enumerate(CLASSES) if c not in STRUCTURE)}
INERT_TEXT = "no effect at these settings"
# per-scene columns for the inert rule's second criterion: scored points predicted as the reference did
SAME_COLUMN = {"base": "n_same_source", "bn": "n_same_bn"}


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


_CELL_KEYS = ("cell_id", "row", "col", "model_seed", "seed", "miou", "base_cell", "bn_cell")


@dataclass(frozen=True)
class Units:
    """Per-scene values keyed by (model_seed, seed, scene): mIoU, confusion matrices (U, C, C) and
    optional per-scene columns (``extra``), aligned with ``index``."""

    index: pd.MultiIndex
    miou: np.ndarray
    conf: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of_cell(cls, scene: np.ndarray, miou: np.ndarray, conf: np.ndarray, extra: dict[str, np.ndarray]) -> Units:
        """One cell's scenes (model seed and seed are set when cells are put together)."""
        zero = np.zeros(len(scene), int)
        return cls(pd.MultiIndex.from_arrays([zero, zero, np.asarray(scene, dtype=object)],
                                             names=["model_seed", "seed", "scene"]), miou, conf, extra)

    @property
    def scene(self) -> np.ndarray:
        return np.asarray(self.index.get_level_values(2), dtype=object)

    def __len__(self) -> int:
        return len(self.miou)

    @classmethod
    def concat(cls, parts: list[Units], model_seeds: list, seeds: list) -> Units:
        """One cell's scenes per part, keyed by that cell's model seed and seed."""
        index = pd.MultiIndex.from_arrays(
            [np.concatenate([[m] * len(u) for u, m in zip(parts, model_seeds)]),
             np.concatenate([[s] * len(u) for u, s in zip(parts, seeds)]),
             np.concatenate([u.scene for u in parts])], names=["model_seed", "seed", "scene"])
        keys = set.intersection(*(set(u.extra) for u in parts)) if parts else set()
        return cls(index, np.concatenate([u.miou for u in parts]), np.concatenate([u.conf for u in parts]),
                   {k: np.concatenate([u.extra[k] for u in parts]) for k in keys})

    def take(self, index: pd.Index) -> Units:
        """The values at ``index`` (a subset of this index), in its order."""
        pos = self.index.get_indexer(index)
        if (pos < 0).any():
            raise KeyError("units not all present")
        return Units(self.index[pos], self.miou[pos], self.conf[pos], {k: v[pos] for k, v in self.extra.items()})


@dataclass(frozen=True)
class Pairs:
    """A row's and its reference's per-scene mIoU on the same units, their design, and for the inert
    rule's second criterion the per-scene count of points predicted as the reference did with the
    scored count (None where the scenes lack the column)."""

    a: np.ndarray
    b: np.ndarray
    design: stats.Design
    same: np.ndarray | None
    scored: np.ndarray | None


@dataclass
class Results:
    """The finished cells of a results folder with role, display name (``row``), parameter columns
    (``p_<name>``), the column key ``col`` = (source, target), the paired baseline cell id
    (``base_cell``) and BN-Adapt cell id (``bn_cell``), and scores recomputed from the scenes."""

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
        if "model_seed" not in ok:  # before protocol v3 each seed trained its own model
            ok["model_seed"] = ok["seed"]
        ok["model_seed"] = ok["model_seed"].fillna(ok["seed"])
        ok["teacher"] = ok["teacher"].fillna("")
        ok["params"] = ok["params"].map(lambda s: json.dumps(_params(s), sort_keys=True))
        scenes = scenes if scenes is not None else pd.DataFrame()
        if not scenes.empty:
            scenes = scenes[scenes["cell_id"].isin(set(ok["cell_id"]))]
            if "probe" in scenes:  # forgetting-probe rows (clean source scenes) are not target scenes
                scenes = scenes[~scenes["probe"].fillna(False).astype(bool)]
        ok, scenes = rescore.rescore(ok, scenes, CLASSES, GROUPS)
        ok = with_roles(ok)
        ok["row"] = _names(ok)
        for key in sorted({k for s in ok["params"] for k in _params(s)}):
            ok[f"p_{key}"] = ok["params"].map(lambda s, k=key: _params(s).get(k))
        ok["col"] = list(zip(ok["source"], ok["target"]))
        ok = ok.reset_index(drop=True)
        ok["base_cell"] = _reference_cells(ok, ok["role"] == "baseline")
        ok["bn_cell"] = _reference_cells(ok, (ok["method"] == BN_METHOD) & (ok["role"] != "control"))
        ok.loc[ok["role"] == "baseline", "bn_cell"] = None  # Source-Only against BN-Adapt is BN-Adapt's own change
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

    @cached_property
    def bn_row(self) -> str | None:
        """The BN-Adapt row the ``bn_cell`` pairing uses most (None without one)."""
        bn = self.cells["bn_cell"].dropna()
        if bn.empty:
            return None
        rows = self.cells.set_index("cell_id").loc[bn, "row"]
        return str(rows.value_counts().index[0])

    def ranked(self) -> list[str]:
        """Rows that compete: baselines and methods, never controls nor inert rows."""
        return [r for r in self.order if self.roles[r] != "control" and r not in self.inert]

    def display(self, row: str) -> str:
        """The row's name as tables show it: inert rows say so."""
        return f"{row} ({INERT_TEXT})" if row in self.inert else row

    # ------------------------------------------------------------------------------ per scene
    @cached_property
    def _cell_units(self) -> dict[str, Units]:
        """Per cell its scenes (in stream order) as arrays: scene keys, mIoU, confusion matrices and the
        inert rule's agreement columns where present."""
        if self.scenes.empty:
            return {}
        sc = self.scenes.reset_index(drop=True)
        conf = rescore.scene_confs(sc, NUM_CLASSES)
        extra = [k for k in SAME_COLUMN.values() if k in sc]
        out = {}
        for cid, idx in sc.groupby("cell_id").indices.items():
            idx = idx[np.argsort(sc["index"].to_numpy()[idx], kind="stable")] if "index" in sc else idx
            out[cid] = Units.of_cell(sc["scene"].to_numpy(dtype=object)[idx], sc["miou"].to_numpy(dtype=float)[idx],
                             conf[idx], {k: sc[k].to_numpy(dtype=float)[idx] for k in extra})
        return out

    @cached_property
    def _cells_by(self) -> dict[tuple[str, tuple[str, str]], pd.DataFrame]:
        c = self.cells[list(_CELL_KEYS)]
        return {k: g.sort_values(["model_seed", "seed"]) for k, g in c.groupby(["row", "col"], sort=False)}

    def cells_of(self, row: str, col: tuple[str, str]) -> pd.DataFrame:
        """The row's cells on ``col`` (identity, seeds, mIoU and reference cells), by model seed and seed."""
        got = self._cells_by.get((row, col))
        return got if got is not None else self.cells.iloc[0:0][list(_CELL_KEYS)]

    @cached_property
    def _per_scene(self) -> dict[tuple[str, tuple[str, str]], Units | None]:
        return {}

    def per_scene(self, row: str, col: tuple[str, str]) -> Units | None:
        """Per-scene values of ``row`` on ``col`` over its cells, keyed by (model_seed, seed, scene);
        None if any of its cells lacks them."""
        key = (row, col)
        if key not in self._per_scene:
            c = self.cells_of(row, col)
            parts = [self._cell_units.get(cid) for cid in c["cell_id"]]
            if not parts or any(u is None for u in parts):
                self._per_scene[key] = None
            else:
                self._per_scene[key] = Units.concat(parts, list(c["model_seed"]), list(c["seed"]))
        return self._per_scene[key]

    def classes(self, col: tuple[str, str]) -> tuple[int, ...] | None:
        c = self.cells[self.cells["col"] == col]
        if "eval_classes" not in c or c.empty:
            return None
        return tuple(CLASS_ID[k] for k in str(c["eval_classes"].iloc[0]).split(",") if k)

    def paired(self, rows: list[str], col: tuple[str, str]) -> tuple[list[str], pd.Index, dict[str, Units]]:
        """The rows of ``rows`` that have per-scene data on ``col``, the (model_seed, seed, scene) units
        they all share (sorted), and their per-scene values restricted to those units (same order)."""
        frames = {r: self.per_scene(r, col) for r in rows}
        frames = {r: f for r, f in frames.items() if f is not None}
        if not frames:
            return [], pd.Index([]), {}
        common = None
        for f in frames.values():
            common = f.index if common is None else common.intersection(f.index)
        common = common.sort_values()
        return list(frames), common, {r: f.take(common) for r, f in frames.items()}

    @staticmethod
    def design(index: pd.MultiIndex) -> stats.Design:
        """The resampling design of (model_seed, seed, scene) units."""
        return stats.Design.from_index(index)

    @staticmethod
    def confs(units: Units) -> np.ndarray:
        """(U, C, C) confusion matrices of per-scene values, in their order."""
        return units.conf

    # ------------------------------------------------------------------------------ references
    @cached_property
    def _miou(self) -> dict[str, float]:
        return dict(zip(self.cells["cell_id"], self.cells["miou"]))

    def delta(self, row: str, col: tuple[str, str], ref: str = "base") -> float:
        """Mean over the row's cells of the cell's mIoU minus its paired reference cell's (``ref``:
        "base" = Source-Only, "bn" = BN-Adapt); NaN without one."""
        c = self.cells_of(row, col)
        m = self._miou
        d = [x - m[b] for x, b in zip(c["miou"], c[f"{ref}_cell"]) if isinstance(b, str)]
        return float(np.mean(d)) if d else float("nan")

    def paired_with(self, row: str, col: tuple[str, str], ref: str = "base") -> Pairs | None:
        """Per-scene values of ``row`` and of its reference cells (``ref``: "base" | "bn") on the same
        (model_seed, seed, scene) units with their design; None without pairs."""
        a, b, keys, same, scored = [], [], [], [], []
        c = self.cells_of(row, col)
        col_same = SAME_COLUMN[ref]
        for cid, bid, ms, sd in zip(c["cell_id"], c[f"{ref}_cell"], c["model_seed"], c["seed"]):
            u = self._cell_units.get(cid)
            ub = self._cell_units.get(bid) if isinstance(bid, str) else None
            if u is None or ub is None:
                continue
            names = u.scene
            pos = {k: i for i, k in enumerate(ub.scene)}
            i = np.array([j for j, k in enumerate(names) if k in pos], dtype=int)
            ib = np.array([pos[names[j]] for j in i], dtype=int)
            a.append(u.miou[i])
            b.append(ub.miou[ib])
            keys += [(ms, sd, names[j]) for j in i]
            same.append(u.extra[col_same][i] if col_same in u.extra else None)
            scored.append(u.conf[i].sum((1, 2)).astype(float))
        if not keys:
            return None
        has_same = all(x is not None for x in same)
        return Pairs(np.concatenate(a), np.concatenate(b), stats.Design.from_keys(*zip(*keys)),
                     np.concatenate(same) if has_same else None, np.concatenate(scored) if has_same else None)

    def paired_with_baseline(self, row: str, col: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-scene mIoU of ``row`` and of its baseline on the same units."""
        p = self.paired_with(row, col, "base")
        return (p.a, p.b) if p is not None else (np.array([]), np.array([]))

    @cached_property
    def inert_detail(self) -> dict[str, tuple[str, str]]:
        """Inert rows: row -> (reference row, rule that held). A row is inert against a reference when
        ``bench.stats.inert`` holds in every column where both have per-scene rows (at least one);
        references: Source-Only, then BN-Adapt (never the row itself). The identical-predictions rule
        counts against the cell's own model before adaptation (``n_same_source``), which is Source-Only's
        model for the plain recipe and the joint model for a joint recipe (TTT-KD, TTT-MAE): the
        reference is then named "its un-adapted model"."""
        out: dict[str, tuple[str, str]] = {}
        if self.scenes.empty:
            return out
        names = {"base": "Source-Only", "bn": "BN-Adapt"}
        for r in self.order:
            if self.roles[r] != "method":  # the baseline is the reference; controls are never ranked anyway
                continue
            if (self.cells.loc[self.cells["row"] == r, "method"] == "source").all():
                continue  # a model predicting as trained (Joint-Train): nothing adapts, so no settings to name
            for ref in ("base", "bn"):
                verdicts = []
                for j, col in enumerate(self.columns):
                    p = self.paired_with(r, col, ref)
                    if p is not None:
                        verdicts.append(stats.inert(p.a, p.b, p.design, p.same, p.scored, n_boot=2000, seed=j))
                if verdicts and all(v.inert for v in verdicts):
                    refs = self.cells.loc[self.cells["row"] == r, f"{ref}_cell"].dropna()
                    rows = dict(zip(self.cells["cell_id"], self.cells["row"]))
                    ref_row = str(rows[refs.iloc[0]]) if len(refs) else names[ref]
                    why = sorted({v.reason for v in verdicts})[0]
                    if why == "identical predictions":  # n_same_source counts against the cell's own model
                        ref_row = "its un-adapted model" + self._own_model(r)
                    out[r] = (ref_row, why)
                    break
        return out

    def _own_model(self, row: str) -> str:
        """" (recipe R)" where the row adapts another model than Source-Only's (a joint recipe), else ""."""
        recipes = set(self.cells.loc[self.cells["row"] == row, "recipe"].astype(str)) if "recipe" in self.cells \
            else set()
        recipes.discard("source")
        return f" (recipe {', '.join(sorted(recipes))})" if recipes else ""

    @cached_property
    def inert(self) -> set[str]:
        return set(self.inert_detail)


def _reference_cells(ok: pd.DataFrame, is_ref: pd.Series) -> pd.Series:
    """Per cell the id of the reference row's cell (``is_ref`` marks the reference rows' cells) with
    the same model context; None for the reference cells themselves and where there is none. With
    several reference configurations in one context, the one with the fewest parameters set."""
    keys = [c for c in CONTEXT if c in ok]
    ref = ok[is_ref].copy()
    ref["_np"] = ref["params"].map(lambda s: len(_params(s)))
    ref = ref.sort_values(["_np", "params"], kind="stable").drop_duplicates(keys)[keys + ["cell_id"]]
    merged = ok[keys].astype(str).merge(ref.astype(str), on=keys, how="left")
    out = merged["cell_id"].where(merged["cell_id"].notna(), None)
    out.index = ok.index
    return out.where(~is_ref.to_numpy(), None)


def load(folder: Path) -> Results:
    folder = Path(folder)
    store = ResultsStore(folder)
    cells = store.cells()
    if cells.empty:
        raise BenchError(f"{folder}: no results (cells.parquet missing or empty); run `python -m bench run` first")
    if not (cells["status"] == "ok").any():
        raise BenchError(f"{folder}: every cell failed; see the 'error' column of its cells table")
    return Results.from_frames(cells, store.scenes(), folder)
