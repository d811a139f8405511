"""Figures as a small registry: each entry says whether it applies to a results folder and draws
itself from the rows' columns (roles, ``p_<param>`` columns, teacher, target spec, cost), so a new
method or grid needs no edit here. ``draw`` returns (file stem, figure) pairs; each is saved as PNG
and SVG with a tight bounding box, so no label is cut at the edge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.data.classes import CLASSES  # noqa: E402
from bench.data.datasets import DatasetSpec  # noqa: E402
from bench.report.frame import Results, natural  # noqa: E402

ROLE_STYLE = {"baseline": ("k", "s"), "method": (None, "o"), "control": ("grey", "^")}


@dataclass(frozen=True)
class FigureEntry:
    name: str
    applies: Callable[[Results], bool]
    draw: Callable[[Results], Iterator[tuple[str, plt.Figure]]]


FIGURES: list[FigureEntry] = []


def figure(name: str, applies: Callable[[Results], bool]):
    def deco(draw):
        FIGURES.append(FigureEntry(name, applies, draw))
        return draw

    return deco


def save(fig: plt.Figure, out: Path, stem: str, formats: tuple[str, ...] = ("png", "svg"), **savefig) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` (or the ``formats`` given) byte for byte the same on every run of
    the same data (no date in the metadata, SVG ids from a fixed salt), so regenerating a committed report
    changes no file whose figure did not change."""
    paths = []
    opts = {"dpi": 130, "bbox_inches": "tight", "pad_inches": 0.1, **savefig}
    for ext in formats:
        p = out / f"{stem}.{ext}"
        with plt.rc_context({"svg.hashsalt": "ttt-bench"}):
            fig.savefig(p, metadata={"Date": None} if ext == "svg" else None, **opts)
        paths.append(p)
    plt.close(fig)
    return paths


def figures(res: Results, out: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    written: list[Path] = []
    for entry in FIGURES:
        if entry.applies(res):
            for stem, fig in entry.draw(res):
                written += save(fig, out, stem, formats)
    return written


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


# ----------------------------------------------------------------------------- parameter curves
def _numeric(v) -> float | None:
    if v is None or (isinstance(v, float) and np.isnan(v)) or isinstance(v, bool):
        return None
    if v == "all":
        return np.inf
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _varied(res: Results) -> list[tuple[str, str]]:
    """(parameter, label) where the rows of one label take two or more numeric values of it."""
    out = []
    for col in [c for c in res.cells.columns if c.startswith("p_")]:
        for label, g in res.cells.groupby("label"):
            xs = {_numeric(v) for v in g[col]}
            xs.discard(None)
            if len(xs) >= 2:
                out.append((col[2:], label))
    return out


@figure("parameter curves", lambda res: bool(_varied(res)))
def param_curves(res: Results):
    """mIoU and adaptation cost against every numeric parameter a grid varies, per pair."""
    varied = _varied(res)
    for param, label in varied:
        stem = f"fig_{_slug(param)}" + ("" if sum(p == param for p, _ in varied) == 1 else f"_{_slug(label)}")
        sub = res.cells[res.cells["label"] == label].copy()
        sub["x"] = sub[f"p_{param}"].map(_numeric)
        sub = sub[sub["x"].notna()]
        xs = sorted(sub["x"].unique())
        pos = {x: i for i, x in enumerate(xs)}
        ticks = ["all" if not np.isfinite(x) else f"{x:g}" for x in xs]
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
        base = res.cells[res.cells["role"] == "baseline"]
        for i, ((src, tgt), g) in enumerate(sub.groupby(["source", "target"])):
            m = g.groupby("x")["miou"].agg(["mean", "std"]).sort_index()
            px = [pos[x] for x in m.index]
            ax.errorbar(px, 100 * m["mean"], yerr=100 * m["std"].fillna(0), marker="o", capsize=3, color=f"C{i}",
                        label=f"{src} → {tgt}")
            b = base[(base["source"] == src) & (base["target"] == tgt)]["miou"]
            if len(b):
                ax.axhline(100 * b.mean(), color=f"C{i}", ls="--", lw=0.8)
            t = g.groupby("x")["adapt_s_per_scene"].mean().sort_index()
            ax2.plot([pos[x] for x in t.index], t.values, marker="s", color=f"C{i}")
        for a in (ax, ax2):
            a.set_xticks(range(len(xs)), ticks)
            a.set_xlabel(param)
            a.grid(alpha=0.3)
        ax.set_ylabel("mIoU (%) (dashed: Source-Only)")
        ax2.set_ylabel("adaptation seconds per scene")
        ax.set_title(f"{label}: mIoU against {param}")
        ax2.set_title(f"{label}: cost against {param}")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8)
        yield stem, fig


# --------------------------------------------------------------------------------------- teachers
def _teachers(res: Results) -> pd.DataFrame:
    return res.cells[res.cells["teacher"].str.len() > 0]


@figure("teachers", lambda res: _teachers(res)["teacher"].nunique() > 1)
def teachers(res: Results):
    g = _teachers(res).groupby(["label", "teacher"])["miou"].mean().unstack()
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    (100 * g).plot.bar(ax=ax, rot=0)
    ax.set_ylabel("mIoU (%) (mean over pairs and seeds)")
    ax.set_xlabel("")
    ax.set_title("mIoU by teacher")
    ax.legend(fontsize=7, title="teacher")
    ax.grid(alpha=0.3, axis="y")
    yield "fig_teachers", fig


# ---------------------------------------------------------------------------------- cost (Pareto)
def place_labels(xy: np.ndarray, size: tuple[float, float], radius: float = 9.0) -> np.ndarray:
    """Greedy placement of equal-size labels next to points (display coordinates): for each point
    the first candidate offset, on rings of growing radius, whose box overlaps no label placed
    before and no marker. Returns the label centres."""
    w, h = size
    placed: list[tuple[float, float]] = []
    out = np.zeros_like(xy, dtype=float)
    angles = np.deg2rad([45, 135, 315, 225, 90, 270, 0, 180, 22, 158, 338, 202, 68, 112, 292, 248])

    def free(cx, cy):
        if any(abs(cx - px) < w and abs(cy - py) < h for px, py in placed):
            return False
        return not any(abs(cx - x) < w / 2 + 3 and abs(cy - y) < h / 2 + 3 for x, y in xy)

    for i, (x, y) in enumerate(xy):
        best = None
        for ring in range(1, 12):
            for a in angles:
                cx, cy = x + ring * radius * np.cos(a), y + ring * radius * np.sin(a)
                if free(cx, cy):
                    best = (cx, cy)
                    break
            if best:
                break
        best = best or (x + radius, y + radius)
        placed.append(best)
        out[i] = best
    return out


@figure("accuracy against cost", lambda res: len(res.order) > 1)
def pareto(res: Results):
    """Mean mIoU over pairs against adaptation + prediction seconds per scene; points are numbered,
    the numbers placed so that they do not overlap, and the legend beside the axes names them."""
    c = res.cells
    g = c.groupby("row").agg(miou=("miou", "mean"), a=("adapt_s_per_scene", "mean"), i=("infer_s_per_scene", "mean"))
    g = g.loc[[r for r in res.order if r in g.index]]
    t = (g["a"] + g["i"]).clip(lower=1e-4)
    fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
    handles = []
    for k, (r, x, y) in enumerate(zip(g.index, t, 100 * g["miou"]), start=1):
        color, marker = ROLE_STYLE[res.roles[r]]
        h = ax.scatter([x], [y], s=30, marker=marker, color=color or f"C{(k - 1) % 10}", zorder=3,
                       label=f"{k}  {r}")
        handles.append(h)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per scene (adapt + predict, log scale)")
    ax.set_ylabel("mIoU (%) (mean over pairs and seeds)")
    ax.set_title("accuracy against cost")
    ax.grid(alpha=0.3)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))
    xl = ax.get_xlim()
    ax.set_xlim(xl[0] / 1.3, xl[1] * 1.3)
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False,
               title="baseline ■, methods ●, controls ▲", title_fontsize=7)
    fig.canvas.draw()  # fixes the layout, so the label positions below hold in the saved figure
    pts = ax.transData.transform(np.column_stack([t.to_numpy(), 100 * g["miou"].to_numpy()]))
    centres = place_labels(pts, (16.0, 11.0))
    inv = ax.transData.inverted()
    for k, ((px, py), (cx, cy)) in enumerate(zip(pts, centres), start=1):
        dx, dy = inv.transform((cx, cy))
        ax.annotate(str(k), xy=inv.transform((px, py)), xytext=(dx, dy), ha="center", va="center", fontsize=7,
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="0.5", shrinkA=0, shrinkB=2), annotation_clip=False)
    fig.set_layout_engine("none")  # keep the axes where the labels were placed
    yield "fig_pareto", fig


# ----------------------------------------------------------------------------------- corruptions
def _one_spec(target: str) -> bool:
    """The target is one dataset spec (not a stream of several, nor one with a scenario suffix)."""
    try:
        DatasetSpec.parse(target)
    except Exception:  # noqa: BLE001 - a stream label such as 'a:jitter@1>a:jitter@3' is no spec
        return False
    return ">" not in target and "+" not in target and "[" not in target


def _corrupted(res: Results) -> pd.DataFrame:
    single = res.cells["target"].map(_one_spec)
    cr = res.cells[single & res.cells["target"].str.contains(":")].copy()
    specs = cr["target"].map(DatasetSpec.parse)
    cr["corruption"] = specs.map(lambda d: d.corruption)
    cr["severity"] = specs.map(lambda d: d.severity)
    cr["base"] = specs.map(lambda d: d.base)
    return cr


@figure("corruption severity", lambda res: not _corrupted(res).empty)
def corruptions(res: Results):
    cr = _corrupted(res)
    kinds = sorted(cr["corruption"].unique())
    ncol = min(4, len(kinds))
    nrow = -(-len(kinds) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow + 0.8), squeeze=False, sharey=True,
                             layout="constrained")
    rows = [r for r in res.order if r in set(cr["row"])]
    for ax, k in zip(axes.flat, kinds):
        for i, r in enumerate(rows):
            g = cr[(cr["corruption"] == k) & (cr["row"] == r)]
            m = g.groupby("severity")["miou"].mean()
            ax.plot(m.index, 100 * m.values, marker="o", color=f"C{i % 10}", label=r)
        ax.set_title(k)
        ax.set_xlabel("severity")
        ax.set_xticks(sorted(cr["severity"].unique()))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("mIoU (%)")
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(4, len(rows)),
               fontsize=9)
    bases = sorted({f"{src} model on corrupted {b}" for src, b in zip(cr["source"], cr["base"])})
    fig.suptitle("mIoU against corruption severity" + (f" ({bases[0]})" if len(bases) == 1 else ""))
    yield "fig_corruptions", fig


# -------------------------------------------------------------------------------- per-class IoU
def _iou_cols(res: Results) -> list[str]:
    return [f"iou_{c}" for c in CLASSES if f"iou_{c}" in res.cells and res.cells[f"iou_{c}"].notna().any()]


@figure("per-class IoU", lambda res: bool(_iou_cols(res)))
def per_class(res: Results):
    cols = _iou_cols(res)
    hm = res.cells.groupby("row")[cols].mean()
    hm = hm.loc[[r for r in res.order if r in hm.index]]
    fig, ax = plt.subplots(figsize=(2.5 + 0.7 * len(cols), 1.2 + 0.3 * len(hm)), layout="constrained")
    im = ax.imshow(100 * hm.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), [c[4:] for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(hm)), list(hm.index), fontsize=7)
    for (i, j), v in np.ndenumerate(100 * hm.values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="w" if v < 60 else "k")
    fig.colorbar(im, ax=ax, label="IoU (%)")
    ax.set_title("per-class IoU (mean over cells)")
    yield "fig_per_class_iou", fig


# ------------------------------------------------------------------------------------ scenarios
# Streams (bench.spec.StreamProtocol): per-scene rows carry their position in the stream (``index``)
# and, for the forgetting probe, ``probe`` = True; cells carry ``segments`` (per-segment mIoU) and
# ``probe_curve`` (probe mIoU against position). Grids without these columns get none of these.
MIN_STREAM = 8  # scenes per cell from which mIoU against the stream position is drawn


def _stream_scenes(res: Results) -> pd.DataFrame:
    """Per-scene rows of the target streams (probe rows left out), with the cell's row and column."""
    sc = res.scenes
    if sc is None or sc.empty or "index" not in sc:
        return pd.DataFrame()
    if "probe" in sc:
        sc = sc[sc["probe"].fillna(False).astype(bool) == False]  # noqa: E712 - a column of bools
    sc = sc.merge(res.cells[["cell_id", "row", "source", "target", "seed"]], on="cell_id")
    n = sc.groupby("cell_id")["index"].transform("size")
    return sc[n >= MIN_STREAM]


def _panels(keys: list, width: float = 5.0, height: float = 3.4):
    ncol = min(3, len(keys))
    nrow = -(-len(keys) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow + 0.9), squeeze=False,
                             layout="constrained")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    return fig, axes


def _legend(axes) -> tuple[list, list]:
    """Legend entries of every panel, each label once (a row may be absent from some panels)."""
    seen: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen)


def rolling_position(sc: pd.DataFrame, window: int) -> pd.DataFrame:
    """Mean per-scene mIoU over seeds at each stream position, then a centred rolling mean over
    ``window`` positions (fewer at the ends). Columns: index, miou."""
    m = sc.groupby("index")["miou"].mean().sort_index()
    return pd.DataFrame({"index": m.index, "miou": m.rolling(window, center=True, min_periods=1).mean().values})


_DASHES = ("-", "--", "-.", ":")
_HUES = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")  # tab10 without its grey (C7): controls are grey
_MARKS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def stream_styles(rows: list[str], roles: dict[str, str]) -> dict[str, dict]:
    """A distinct line style per row (colour, dash, marker): methods take the nine non-grey tab10 colours
    in turn and a new dash after every nine; baselines are black, controls grey, each with its own dash;
    every row has its own marker. No two rows (up to 36 methods, 4 controls) share colour and dash."""
    out, k, grey = {}, 0, {"baseline": 0, "control": 0}
    for j, r in enumerate(rows):
        role = roles.get(r, "method")
        if role in grey:
            color = "k" if role == "baseline" else "0.5"
            dash = _DASHES[grey[role] % len(_DASHES)]
            grey[role] += 1
        else:
            color, dash = _HUES[k % len(_HUES)], _DASHES[(k // len(_HUES)) % len(_DASHES)]
            k += 1
        out[r] = {"color": color, "ls": dash, "marker": _MARKS[j % len(_MARKS)]}
    return out


@figure("mIoU against stream position", lambda res: not _stream_scenes(res).empty)
def stream_position(res: Results):
    """Per target stream, each row's per-scene mIoU against its position (rolling mean), so error
    accumulation, recovery after a reset and segment changes show; segment starts are marked."""
    sc = _stream_scenes(res)
    cols = sorted(set(zip(sc["source"], sc["target"])))
    fig, axes = _panels(cols)
    rows = [r for r in res.order if r in set(sc["row"])]
    styles = stream_styles(rows, res.roles)
    for ax, (src, tgt) in zip(axes.flat, cols):
        g = sc[(sc["source"] == src) & (sc["target"] == tgt)]
        n = int(g["index"].max()) + 1
        window = max(3, n // 10)
        for r in rows:
            gr = g[g["row"] == r]
            if gr.empty:
                continue
            m = rolling_position(gr, window)
            ax.plot(m["index"], 100 * m["miou"], lw=1.2, ms=3.5, markevery=max(1, n // 8), label=r, **styles[r])
        if "segment" in g and g["segment"].nunique() > 1:
            one = g[g["cell_id"] == g["cell_id"].iloc[0]].sort_values("index")
            starts = one.loc[one["segment"].ne(one["segment"].shift()), "index"].tolist()
            if len(starts) <= 12:  # segment boundaries of a sequential stream (a mixed one has too many)
                for x in starts[1:]:
                    ax.axvline(x - 0.5, color="0.6", ls=":", lw=0.8)
        ax.set_title(f"{src} → {tgt}", fontsize=8)
        ax.set_xlabel("position in the stream (scene)")
        ax.set_ylabel(f"mIoU (%), rolling mean of {window}")
        ax.grid(alpha=0.3)
    handles, labels = _legend(axes)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle("mIoU against the position in the stream (mean over seeds)")
    yield "fig_stream_position", fig


def _probe_cells(res: Results) -> pd.DataFrame:
    c = res.cells
    if "probe_curve" not in c:
        return pd.DataFrame()
    return c[c["probe_curve"].fillna("[]").map(lambda s: len(json.loads(s)) > 0)]


def probe_curve(cells: pd.DataFrame) -> pd.DataFrame:
    """Probe mIoU against stream position, mean over the cells (seeds). Columns: position, miou."""
    parts = [pd.DataFrame(json.loads(s)) for s in cells["probe_curve"]]
    return pd.concat(parts).groupby("position")["miou"].mean().reset_index()


@figure("forgetting curve", lambda res: not _probe_cells(res).empty)
def forgetting(res: Results):
    """Per target stream, each row's probe mIoU (clean source val scenes, predicted without
    adapting) against the number of target scenes adapted so far: how much of the source it forgets."""
    pc = _probe_cells(res)
    cols = sorted(set(zip(pc["source"], pc["target"])))
    fig, axes = _panels(cols)
    rows = [r for r in res.order if r in set(pc["row"])]
    for ax, (src, tgt) in zip(axes.flat, cols):
        for i, r in enumerate(rows):
            g = pc[(pc["source"] == src) & (pc["target"] == tgt) & (pc["row"] == r)]
            if g.empty:
                continue
            m = probe_curve(g)
            color, marker = ROLE_STYLE[res.roles[r]]
            ax.plot(m["position"], 100 * m["miou"], marker=marker, ms=3, color=color or f"C{i % 10}", label=r)
        ax.set_title(f"{src} → {tgt}", fontsize=8)
        ax.set_xlabel("target scenes adapted")
        ax.set_ylabel(f"probe mIoU (%) on clean {src}")
        ax.grid(alpha=0.3)
    handles, labels = _legend(axes)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle("forgetting: source mIoU along the stream (mean over seeds)")
    yield "fig_forgetting", fig


def segment_table(res: Results) -> pd.DataFrame:
    """Per-segment mIoU of the multi-segment streams: one row per (stream, row), one column per
    segment (its position and dataset) and 'overall' (the cell's mIoU); means over seeds."""
    c = res.cells
    if "segments" not in c or "n_segments" not in c:
        return pd.DataFrame()
    c = c[c["n_segments"].fillna(1) > 1]
    recs = []
    for r in c.itertuples():
        for s in json.loads(r.segments or "[]"):
            recs.append({"stream": f"{r.source} → {r.target}", "row": r.row, "seed": r.seed,
                         "segment": f"{s['segment'] + 1}: {s['dataset']}", "miou": s["miou"]})
        recs.append({"stream": f"{r.source} → {r.target}", "row": r.row, "seed": r.seed, "segment": "overall",
                     "miou": r.miou})
    if not recs:
        return pd.DataFrame()
    t = pd.DataFrame(recs).groupby(["stream", "row", "segment"], sort=False)["miou"].mean().unstack("segment")
    segs = sorted([s for s in t.columns if s != "overall"], key=natural) + ["overall"]
    return t[segs]


@figure("per-segment mIoU", lambda res: not segment_table(res).empty)
def segments(res: Results):
    """Per multi-segment stream (continual, gradual, mixed by domain) a table of each row's mIoU on
    each segment and overall, drawn as an annotated heat map."""
    t = segment_table(res)
    for stream, g in t.groupby(level="stream", sort=False):
        g = g.droplevel("stream").dropna(axis=1, how="all")
        g = g.loc[[r for r in res.order if r in g.index]]
        fig, ax = plt.subplots(figsize=(2.5 + 1.1 * g.shape[1], 1.2 + 0.32 * len(g)), layout="constrained")
        im = ax.imshow(100 * g.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(g.shape[1]), list(g.columns), rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(g)), list(g.index), fontsize=7)
        for (i, j), v in np.ndenumerate(100 * g.values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="w" if v < 60 else "k")
        ax.axvline(g.shape[1] - 1.5, color="w", lw=2)
        fig.colorbar(im, ax=ax, label="mIoU (%)")
        ax.set_title(f"per-segment mIoU: {stream}", fontsize=8)
        yield f"fig_segments_{_slug(stream)[:80]}", fig


__all__ = ["FIGURES", "FigureEntry", "figure", "figures", "natural", "place_labels", "probe_curve", "reliability_table",
           "rolling_position", "save", "segment_table"]


# ----------------------------------------------------------------------------------- multi-modal
MODAL_KEYS = (("miou_2d", "2D"), ("miou_3d", "3D"), ("miou_fused", "fused"))


def _modal_rows(res: Results) -> pd.DataFrame:
    """Rows with a 2D branch (finite ``miou_2d``), plus every row's 3D value for comparison."""
    c = res.cells
    if "miou_2d" not in c or not np.isfinite(c["miou_2d"].astype(float)).any():
        return pd.DataFrame()
    c = c.copy()
    c["miou_3d"] = (c["miou_3d"] if "miou_3d" in c else c["miou"]).astype(float).fillna(c["miou"].astype(float))
    for k in ("miou_2d", "miou_fused"):
        c[k] = c[k].astype(float)
    return c


@figure("2D / 3D / fused mIoU", lambda res: not _modal_rows(res).empty)
def modal_bars(res: Results):
    """Grouped bars per row: 2D, 3D and fused mIoU (mean over pairs and seeds); rows without a 2D branch
    show their 3D bar only."""
    c = _modal_rows(res)
    g = c.groupby("row")[[k for k, _ in MODAL_KEYS]].mean()
    rows = [r for r in res.order if r in g.index]
    x = np.arange(len(rows))
    width = 0.27
    fig, ax = plt.subplots(figsize=(2.0 + 0.75 * len(rows), 3.6), layout="constrained")
    for i, (k, name) in enumerate(MODAL_KEYS):
        vals = 100 * g.loc[rows, k].to_numpy(dtype=float)
        ax.bar(x + (i - 1) * width, np.nan_to_num(vals, nan=0.0), width, label=name,
               color=("tab:orange", "tab:blue", "tab:green")[i])  # no bar (0) where a row has no 2D branch
    ax.set_xticks(x, rows, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mIoU (%) (mean over pairs and seeds)")
    ax.set_title("2D (seen points), 3D and fused mIoU")
    ax.legend(fontsize=8)
    yield "fig_modal", fig


# ----------------------------------------------------------------------------------- calibration
CALIB = ("calib_count", "calib_conf", "calib_correct")


def reliability_table(res: Results) -> pd.DataFrame:
    """Per row the calibration histograms pooled over its target scenes (every pair and seed): one
    row per (row, bin) with count, mean confidence, accuracy; empty without histogram columns."""
    sc = res.scenes
    if sc is None or sc.empty or not all(k in sc for k in CALIB):
        return pd.DataFrame()
    rows = dict(zip(res.cells["cell_id"], res.cells["row"]))
    recs = []
    for r, g in sc.groupby(sc["cell_id"].map(rows)):
        count, conf, correct = (np.sum([np.asarray(v, dtype=np.float64) for v in g[k]], 0) for k in CALIB)
        k = len(count)
        with np.errstate(invalid="ignore", divide="ignore"):
            recs += [{"row": r, "bin": b, "lo": b / k, "hi": (b + 1) / k, "count": count[b],
                      "confidence": conf[b] / count[b] if count[b] else np.nan,
                      "accuracy": correct[b] / count[b] if count[b] else np.nan,
                      "ece": float(np.abs(conf - correct).sum() / count.sum()) if count.sum() else np.nan}
                     for b in range(k)]
    return pd.DataFrame(recs)


@figure("reliability diagram", lambda res: not reliability_table(res).empty)
def reliability(res: Results):
    """Per row a reliability diagram of the maximum softmax probability, pooled over its pairs, seeds
    and scenes: accuracy per confidence bin (bars), the diagonal of perfect calibration, the share of
    points per bin (grey) and the row's pooled ECE in the title."""
    t = reliability_table(res)
    rows = [r for r in res.order if r in set(t["row"])]
    fig, axes = _panels(rows, width=3.2, height=3.0)
    for ax, r in zip(axes.flat, rows):
        g = t[t["row"] == r].sort_values("bin")
        w = (g["hi"] - g["lo"]).to_numpy()
        centre = ((g["lo"] + g["hi"]) / 2).to_numpy()
        share = (g["count"] / g["count"].sum()).to_numpy()
        ax.bar(centre, share, width=w, color="0.85", label="share of points")
        ax.bar(centre, np.nan_to_num(g["accuracy"].to_numpy()), width=w * 0.8, color="tab:blue", alpha=0.8,
               label="accuracy")
        ax.plot([0, 1], [0, 1], color="k", ls="--", lw=0.8, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{res.display(r)}\nECE {100 * g['ece'].iloc[0]:.1f}%", fontsize=7)
        ax.set_xlabel("confidence (max softmax)", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.tick_params(labelsize=6)
    handles, labels = _legend(axes)
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle("reliability of the maximum softmax probability (pooled over pairs, seeds and scenes)")
    yield "fig_reliability", fig
