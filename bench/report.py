"""``python -m bench report``: tables (Markdown and LaTeX) and figures (PNG and SVG) from a results folder.

Every table and figure is made from what the results hold, so one command serves every grid:

* ``main``: rows = methods (label), column groups = sources, columns = targets; mIoU in percent with the
  change against Source-Only of the same pair; the best non-oracle value per column in bold; mean and
  standard deviation over seeds where there are several.
* ``cost``: steps per scene, adapt and inference seconds per scene, teacher seconds, peak memory.
* ``stats``: per cell, a 95% bootstrap interval of mIoU over test scenes and a paired Wilcoxon test
  against Source-Only on the same scenes.
* figures, where the grid varies the axis: mIoU against TTT steps, against number of views, by
  teacher, against seconds per scene (all methods), stride trade-off, corruption severity curves, and
  a per-class IoU heatmap.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.data.classes import CLASS_ID, CLASSES, NUM_CLASSES  # noqa: E402
from bench.data.datasets import DatasetSpec  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.stats import bootstrap_ci, paired_test  # noqa: E402
from bench.store import ResultsStore  # noqa: E402

log = logging.getLogger(__name__)
BASELINE = "Source-Only"
ORDER = ["Source-Only", "Joint-Train", "BN-Adapt", "TENT", "Entropy", "DUA", "EATA", "SAR", "CoTTA", "TTT-MAE",
         "TTT-KD-O", "TTT-KD", "Oracle"]


def _label(r) -> str:
    params = json.loads(r["params"]) if isinstance(r["params"], str) else {}
    lab = r["label"]
    return lab + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else "")


def _order(labels) -> list[str]:
    def key(lab):
        # the longest name of ORDER the row starts with (rows add " (params)", " [teacher]", " backbone")
        known = [i for i, name in enumerate(ORDER) if lab == name or lab.startswith(name + " ")]
        rank = max(known, key=lambda i: len(ORDER[i])) if known else len(ORDER)
        natural = [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", lab)]
        return (rank, natural)

    return sorted(set(labels), key=key)


def _is_control(label: str, teacher: str) -> bool:
    return label.startswith("Oracle") or teacher.startswith("oracle")


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = ResultsStore(folder)
    cells = store.cells()
    if cells.empty:
        raise BenchError(f"{folder}: no results (cells.parquet missing or empty); run `python -m bench run` first")
    ok = cells[cells["status"] == "ok"].copy()
    if ok.empty:
        raise BenchError(f"{folder}: every cell failed; see the 'error' column of {folder / 'cells.csv'}")
    ok["row"] = ok.apply(_label, axis=1)
    ok["row"] = ok["row"] + np.where(ok["teacher"].str.len() > 0, " [" + ok["teacher"] + "]", "")
    ok["row"] = ok["row"] + np.where(ok["backbone"].nunique() > 1, " " + ok["backbone"], "")
    return ok, store.scenes()


# ------------------------------------------------------------------------------------------- tables
def main_table(ok: pd.DataFrame) -> tuple[str, str]:
    agg = ok.groupby(["row", "source", "target"])["miou"].agg(["mean", "std", "count"]).reset_index()
    sources = sorted(agg["source"].unique())
    cols = [(s, t) for s in sources for t in sorted(agg[agg["source"] == s]["target"].unique())]
    rows = _order(agg["row"])
    backbone = ok.groupby("row")["backbone"].first()
    base_rows = [r for r in rows if r.startswith(BASELINE)]
    # each row is compared with the Source-Only row of its own backbone
    base_of = {r: next((b for b in base_rows if backbone[b] == backbone[r]), None) for r in rows}
    get = {(r.row, r.source, r.target): r for r in agg.itertuples()}
    controls = {r for r in rows if _is_control(r, r.split("[")[-1] if "[" in r else "")}
    best = {}
    for c in cols:
        vals = [(get[(r, *c)].mean, r) for r in rows if (r, *c) in get and r not in controls]
        if vals:
            best[c] = max(vals)[1]

    def cell(r, c, latex):
        if (r, *c) not in get:
            return "-"
        g = get[(r, *c)]
        s = f"{100 * g.mean:.1f}"
        if g.count > 1 and np.isfinite(g.std):
            s += f"±{100 * g.std:.1f}"
        if r not in base_rows and (base_of[r], *c) in get:
            d = 100 * (g.mean - get[(base_of[r], *c)].mean)
            s += f" ({d:+.1f})"
        if best.get(c) == r:
            s = f"\\textbf{{{s}}}" if latex else f"**{s}**"
        return s

    short = lambda d: d.replace("synth-", "s-")  # noqa: E731
    md = ["| method | " + " | ".join(f"{short(s)} → {short(t)}" for s, t in cols) + " |",
          "|---|" + "---|" * len(cols)]
    for r in rows:
        md.append(f"| {r} | " + " | ".join(cell(r, c, False) for c in cols) + " |")
    md.append("")
    md.append("mIoU (%) over all points of each target's test scenes; in brackets the change against "
              f"{BASELINE}; bold: best per column excluding oracle controls; ± std over seeds where several.")
    tex = ["\\begin{tabular}{l" + "c" * len(cols) + "}", "\\toprule"]
    tex.append(" & " + " & ".join(f"\\multicolumn{{{sum(1 for c in cols if c[0] == s)}}}{{c}}{{{_tex(s)}}}"
                                 for s in sources) + " \\\\")
    tex.append("method & " + " & ".join(_tex(t) for _, t in cols) + " \\\\")
    tex.append("\\midrule")
    for r in rows:
        tex.append(f"{_tex(r)} & " + " & ".join(cell(r, c, True) for c in cols) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def _tex(s: str) -> str:
    return s.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("±", "$\\pm$").replace("→", "$\\to$")


def cost_table(ok: pd.DataFrame) -> tuple[str, str]:
    g = ok.groupby("row").agg(steps=("steps_per_scene", "mean"), adapt=("adapt_s_per_scene", "mean"),
                              infer=("infer_s_per_scene", "mean"), teacher=("teacher_s", "mean"),
                              mem=("peak_mem_mb", "mean"), kind=("mem_kind", "first"), cells=("cell_id", "count"))
    rows = _order(g.index)
    hdr = ["method", "steps/scene", "adapt s/scene", "infer s/scene", "teacher s/cell (cold)", "peak mem MB", "cells"]
    md = ["| " + " | ".join(hdr) + " |", "|---" * len(hdr) + "|"]
    tex = ["\\begin{tabular}{l" + "r" * (len(hdr) - 1) + "}", "\\toprule", " & ".join(hdr) + " \\\\", "\\midrule"]
    for r in rows:
        x = g.loc[r]
        vals = [f"{x.steps:.1f}", f"{x.adapt:.3f}", f"{x.infer:.3f}", f"{x.teacher:.2f}", f"{x.mem:.0f}", f"{x.cells}"]
        md.append(f"| {r} | " + " | ".join(vals) + " |")
        tex.append(f"{_tex(r)} & " + " & ".join(vals) + " \\\\")
    kind = g["kind"].iloc[0] if len(g) else ""
    md += ["", f"Means over cells. Peak memory: {kind} (on CPU the resident-set growth while the method runs)."]
    tex += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def stats_table(ok: pd.DataFrame, scenes: pd.DataFrame) -> str:
    if scenes.empty:
        return ""
    by_cell = {cid: g.sort_values("index") for cid, g in scenes.groupby("cell_id")}
    md = ["| method | source → target | seed | mIoU | 95% CI | Δ vs Source-Only | p (Wilcoxon) |", "|---" * 7 + "|"]
    base = ok[ok["row"].str.startswith(BASELINE)]
    for r in ok.sort_values(["source", "target", "seed"]).itertuples():
        g = by_cell.get(r.cell_id)
        if g is None:
            continue
        classes = tuple(CLASS_ID[c] for c in r.eval_classes.split(",") if c)
        confs = np.stack([np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES) for c in g["conf"]])
        lo, hi = bootstrap_ci(confs, classes)
        d, p = "", ""
        b = base[(base["source"] == r.source) & (base["target"] == r.target) & (base["seed"] == r.seed)
                 & (base["backbone"] == r.backbone)]
        if not r.row.startswith(BASELINE) and len(b):
            bg = by_cell.get(b.iloc[0]["cell_id"])
            if bg is not None and list(bg["scene"]) == list(g["scene"]):
                dd, pp = paired_test(g["miou"].to_numpy(), bg["miou"].to_numpy())
                d, p = f"{100 * dd:+.1f}", f"{pp:.3f}"
        md.append(f"| {r.row} | {r.source} → {r.target} | {r.seed} | {100 * r.miou:.1f} | "
                  f"[{100 * lo:.1f}, {100 * hi:.1f}] | {d} | {p} |")
    md += ["", "CI: percentile bootstrap over test scenes (1000 resamples, confusions summed). Δ: mean per-scene "
           "mIoU difference to Source-Only on the same scenes; p: two-sided Wilcoxon signed-rank test."]
    return "\n".join(md) + "\n"


# ------------------------------------------------------------------------------------------ figures
def _save(fig, out: Path, name: str, written: list[Path]) -> None:
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=130, bbox_inches="tight")
        written.append(p)
    plt.close(fig)


def _param_curve(ok, method: str, param: str, out: Path, name: str, xlabel: str, written, log_x=False):
    sub = ok[ok["method"] == method].copy()
    if sub.empty:
        return
    sub["x"] = sub["params"].map(lambda s: json.loads(s).get(param))
    sub = sub[sub["x"].notna()]
    if sub["x"].nunique() < 2:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for (src, tgt), g in sub.groupby(["source", "target"]):
        g = g.assign(xn=g["x"].map(lambda v: 1e9 if v == "all" else float(v)))
        m = g.groupby("xn")["miou"].mean().sort_index()
        xs = list(m.index)
        labels = ["all" if x == 1e9 else f"{x:g}" for x in xs]
        ax.plot(range(len(xs)), 100 * m.values, marker="o", label=f"{src} → {tgt}")
        ax.set_xticks(range(len(xs)), labels)
    base = ok[ok["label"] == BASELINE]
    if len(base):
        ax.axhline(100 * base["miou"].mean(), color="grey", ls="--", lw=1, label=f"{BASELINE} (mean)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"{method}: mIoU against {xlabel}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, out, name, written)


def figures(ok: pd.DataFrame, out: Path) -> list[Path]:
    written: list[Path] = []
    _param_curve(ok, "ttt_kd", "steps", out, "fig_steps", "TTT steps per scene", written)
    _param_curve(ok, "ttt_kd", "views", out, "fig_views", "views used for lifting", written)
    # stride trade-off: mIoU and cost
    st = ok[ok["method"] == "ttt_kd_online"].copy()
    st["stride"] = st["params"].map(lambda s: json.loads(s).get("stride"))
    st = st[st["stride"].notna()]
    if st["stride"].nunique() > 1:
        g = st.groupby("stride").agg(miou=("miou", "mean"), s=("adapt_s_per_scene", "mean")).sort_index()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(g.index, 100 * g["miou"], marker="o", color="C0")
        ax.set_xlabel("stride s (one TTT step every s scenes)")
        ax.set_ylabel("mIoU (%)", color="C0")
        ax2 = ax.twinx()
        ax2.plot(g.index, g["s"], marker="s", color="C3")
        ax2.set_ylabel("adaptation seconds per scene", color="C3")
        ax.set_title("TTT-KD-O: accuracy against cost")
        ax.grid(alpha=0.3)
        _save(fig, out, "fig_stride", written)
    # teachers
    tk = ok[ok["teacher"].str.len() > 0]
    if tk["teacher"].nunique() > 1:
        g = tk.groupby(["label", "teacher"])["miou"].mean().unstack()
        fig, ax = plt.subplots(figsize=(7, 4))
        (100 * g).plot.bar(ax=ax)
        ax.set_ylabel("mIoU (%)")
        ax.set_xlabel("")
        ax.set_title("mIoU by teacher")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        _save(fig, out, "fig_teachers", written)
    # Pareto: mIoU against seconds per scene
    pg = ok.groupby("row").agg(miou=("miou", "mean"), s=("adapt_s_per_scene", "mean"),
                               i=("infer_s_per_scene", "mean"))
    if len(pg) > 1:
        fig, ax = plt.subplots(figsize=(7, 5))
        t = pg["s"] + pg["i"]
        ax.scatter(t, 100 * pg["miou"])
        for lab, x, y in zip(pg.index, t, 100 * pg["miou"]):
            ax.annotate(lab[:28], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per scene (adapt + predict, log scale)")
        ax.set_ylabel("mIoU (%) (mean over pairs)")
        ax.set_title("accuracy against cost")
        ax.grid(alpha=0.3)
        _save(fig, out, "fig_pareto", written)
    # corruptions
    cr = ok[ok["target"].str.contains(":")].copy()
    if len(cr):
        specs = cr["target"].map(DatasetSpec.parse)
        cr["corruption"] = specs.map(lambda d: d.corruption)
        cr["severity"] = specs.map(lambda d: d.severity)
        kinds = sorted(cr["corruption"].unique())
        ncol = min(4, len(kinds))
        nrow = -(-len(kinds) // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow + 0.6), squeeze=False, sharey=True,
                                 layout="constrained")
        for ax, k in zip(axes.flat, kinds):
            for lab, g in cr[cr["corruption"] == k].groupby("row"):
                m = g.groupby("severity")["miou"].mean()
                ax.plot(m.index, 100 * m.values, marker="o", label=lab[:24])
            ax.set_title(k)
            ax.set_xlabel("severity")
            ax.set_xticks(sorted(cr["severity"].unique()))
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("mIoU (%)")
        for ax in list(axes.flat)[len(kinds):]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=9)
        bases = sorted({f"{src} model on corrupted {spec.base}" for src, spec in zip(cr["source"], specs)})
        fig.suptitle("mIoU against corruption severity" + (f" ({bases[0]})" if len(bases) == 1 else ""))
        _save(fig, out, "fig_corruptions", written)
    # per-class IoU heatmap
    cols = [f"iou_{c}" for c in CLASSES]
    hm = ok.groupby("row")[cols].mean()
    hm = hm.loc[_order(hm.index)]
    hm = hm.loc[:, hm.notna().any()]
    if len(hm):
        fig, ax = plt.subplots(figsize=(1 + 0.7 * hm.shape[1], 0.8 + 0.35 * len(hm)))
        im = ax.imshow(100 * hm.values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(hm.shape[1]), [c[4:] for c in hm.columns], rotation=45, ha="right")
        ax.set_yticks(range(len(hm)), [r[:40] for r in hm.index], fontsize=7)
        for (i, j), v in np.ndenumerate(100 * hm.values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="w" if v < 60 else "k")
        fig.colorbar(im, ax=ax, label="IoU (%)")
        ax.set_title("per-class IoU (mean over cells)")
        _save(fig, out, "fig_per_class_iou", written)
    return written


def make_report(folder: Path) -> list[Path]:
    folder = Path(folder)
    ok, scenes = load(folder)
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (md, tex) in (("table_main", main_table(ok)), ("table_cost", cost_table(ok))):
        (out / f"{name}.md").write_text(md)
        (out / f"{name}.tex").write_text(tex)
        written += [out / f"{name}.md", out / f"{name}.tex"]
    st = stats_table(ok, scenes)
    if st:
        (out / "table_stats.md").write_text(st)
        written.append(out / "table_stats.md")
    written += figures(ok, out)
    return written
