"""Report tables and figures of the stream scenarios that revisit a domain, and of shift plus corruption.

* ``visit_table`` / ``table_visits`` / ``fig_visits_*``: for each sequential multi-segment stream in
  which some domain (dataset spec) comes back (``recurring``: A, B, C, A, B, C, ...; ``constant``: one
  domain in every segment, so visit k is segment k; a gradual stream's way back), each row's mIoU on
  each visit of each domain (the segment's pooled mIoU, mean over seeds) and the change from the first
  visit to the last: does an online method recover on, or lose, a domain it has already adapted to?
* ``openset_table``: known-class mIoU and unknown-point AUROC / FPR95 of open-set rows (``bench.openset``).
* ``label_free_table``: labelled versus label-free selection on a folder with validation and test
  cells of the same candidates (``bench.criteria.selection_table``; ``bench/grids/label_free.toml``).
* ``shift_corruption_table``: for each pair whose target is another domain *and* corrupted
  (``A -> B:c@s``), with the pairs ``A -> A`` (clean), ``A -> B`` (shift only) and ``A -> A:c@s``
  (corruption only) in the same folder, each row's mIoU on the four and the interaction
  ``both - (shift + corruption - clean)``: negative when the two together cost more than the sum of
  their separate costs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bench.data.datasets import DatasetSpec
from bench.errors import BenchError
from bench.report.figures import _legend, _panels, _slug, figure, stream_styles
from bench.report.frame import Results
from bench.report.tables import Table, pct, short
from bench.spec import visits


def visit_table(res: Results) -> pd.DataFrame:
    """Long table of per-visit mIoU: columns stream, row, dataset, visit, miou (mean over seeds), seeds;
    only for sequential streams in which some dataset spec is read in two or more segments."""
    c = res.cells
    if "segments" not in c or "n_segments" not in c:
        return pd.DataFrame()
    c = c[c["n_segments"].fillna(1) > 1]
    if "order" in c:
        c = c[c["order"].fillna("sequential") == "sequential"]
    recs = []
    for r in c.itertuples():
        segs = sorted(json.loads(r.segments or "[]"), key=lambda s: s["segment"])
        nth = visits([s["dataset"] for s in segs])
        if max(nth, default=1) < 2:
            continue
        for s, k in zip(segs, nth):
            recs.append({"stream": f"{r.source} → {r.target}", "row": r.row, "seed": r.seed, "dataset": s["dataset"],
                         "visit": k, "miou": s["miou"]})
    if not recs:
        return pd.DataFrame()
    df = pd.DataFrame(recs)
    return (df.groupby(["stream", "row", "dataset", "visit"], sort=False)
            .agg(miou=("miou", "mean"), seeds=("seed", "nunique")).reset_index())


def table_visits(res: Results) -> Table | None:
    """``visit_table`` as a report table: one line per (stream, row, domain), a column per visit and the
    change from the first visit to the last (mIoU points)."""
    t = visit_table(res)
    if t.empty:
        return None
    n = int(t["visit"].max())
    rows = []
    for stream, g in t.groupby("stream", sort=False):
        order = [r for r in res.order if r in set(g["row"])]
        for r in order:
            for ds, h in g[g["row"] == r].groupby("dataset", sort=False):
                by = dict(zip(h["visit"], h["miou"]))
                vals = [pct(by.get(k, np.nan)) for k in range(1, n + 1)]
                first, last = by.get(1, np.nan), by.get(max(by), np.nan)
                change = f"{100 * (last - first):+.1f}" if np.isfinite(first) and np.isfinite(last) else "-"
                rows.append([stream, res.display(r), ds] + vals + [change])
    header = ["stream", "method", "domain"] + [f"visit {k}" for k in range(1, n + 1)] + ["last − first"]
    caption = ("mIoU (%) of each visit of each domain of the stream (the pooled mIoU of that segment, mean over "
               "seeds); a constant-difficulty stream visits its one domain in every segment, so visit k is segment k. "
               "last − first: change from the first visit to the last in mIoU points (an online method that recovers "
               "on a domain it has seen gains; one that accumulates error loses).")
    return Table(header, rows, caption, align="lll" + "r" * (n + 1))


@figure("per-visit mIoU", lambda res: not visit_table(res).empty)
def visits_figure(res: Results):
    """Per stream that revisits domains: one panel per domain, each row's mIoU against the visit number."""
    t = visit_table(res)
    for stream, g in t.groupby("stream", sort=False):
        domains = list(dict.fromkeys(g["dataset"]))
        fig, axes = _panels(domains, width=4.0, height=3.0)
        rows = [r for r in res.order if r in set(g["row"])]
        styles = stream_styles(rows, res.roles)
        for ax, ds in zip(axes.flat, domains):
            for r in rows:
                h = g[(g["row"] == r) & (g["dataset"] == ds)].sort_values("visit")
                if not h.empty:
                    ax.plot(h["visit"], 100 * h["miou"], lw=1.2, ms=4, label=r, **styles[r])
            ax.set_xticks(sorted(set(g.loc[g["dataset"] == ds, "visit"])))
            ax.set_title(ds, fontsize=8)
            ax.set_xlabel("visit (segment of this domain)")
            ax.set_ylabel("mIoU (%)")
            ax.grid(alpha=0.3)
        handles, labels = _legend(axes)
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
        fig.suptitle(f"mIoU per visit of each domain (mean over seeds): {stream}", fontsize=9)
        yield f"fig_visits_{_slug(stream)[:80]}", fig


def shift_corruption_cols(res: Results) -> list[dict[str, tuple[str, str]]]:
    """The quadruples of columns (source, target) of the shift-plus-corruption comparison: per column
    ``A -> B:c@s`` (B another domain than A) whose ``A -> A``, ``A -> B`` and ``A -> A:c@s`` columns are
    all present: {"clean", "shift", "corruption", "both"}."""
    cols = set(res.columns)
    out = []
    for src, tgt in sorted(cols):
        try:
            t, s = DatasetSpec.parse(tgt), DatasetSpec.parse(src)
        except BenchError:  # a stream's column ("(A>B>C) x3", "A>B", ...) is not one dataset: no quadruple
            continue
        if not t.corruption or t.base == s.base:
            continue
        corr = tgt[len(t.base):]  # ":c@s" as written
        quad = {"clean": (src, s.base), "shift": (src, t.base), "corruption": (src, s.base + corr), "both": (src, tgt)}
        if all(q in cols for q in quad.values()):
            out.append(quad)
    return out


def shift_corruption_table(res: Results) -> Table | None:
    """Per row and shift-plus-corruption quadruple: mIoU (%) clean, shift only, corruption only, both, and
    the interaction both - (shift + corruption - clean) in points; None when the folder has no quadruple."""
    quads = shift_corruption_cols(res)
    if not quads:
        return None
    m = res.cells.groupby(["row", "col"])["miou"].mean()
    rows = []
    for q in quads:
        for r in res.order:
            v = {k: m.get((r, col), np.nan) for k, col in q.items()}
            inter = v["both"] - (v["shift"] + v["corruption"] - v["clean"])
            rows.append([res.display(r), f"{short(q['both'][0])}→{short(q['both'][1])}", pct(v["clean"]),
                         pct(v["shift"]), pct(v["corruption"]), pct(v["both"]),
                         f"{100 * inter:+.1f}" if np.isfinite(inter) else "-"])
    caption = ("mIoU (%) per row, mean over seeds: clean = the source's own domain, shift = the other domain, "
               "corruption = the source domain corrupted, both = the other domain corrupted; interaction = both − "
               "(shift + corruption − clean), mIoU points (negative: shift and corruption together cost more than "
               "the sum of their separate costs).")
    return Table(["method", "pair (both)", "clean", "shift", "corruption", "both", "interaction"], rows, caption,
                 align="ll" + "r" * 5)


def openset_table(res: Results) -> Table | None:
    """Open-set rows (``bench.openset``): per row and pair the known-class mIoU (%), the AUROC (%) and the
    FPR at 95 % TPR (%) of detecting the held-out classes' points by 1 - MSP, means over seeds; None when
    no cell is open-set."""
    c = res.cells
    if "auroc_unknown" not in c or not c["auroc_unknown"].notna().any():
        return None
    c = c[c["auroc_unknown"].notna() | c.get("holdout_classes", pd.Series(index=c.index, dtype=object)).notna()]
    g = c.groupby(["row", "col"])[["miou", "auroc_unknown", "fpr95_unknown"]].mean().to_dict("index")
    held = ", ".join(sorted({x for v in c.get("holdout_classes", pd.Series(dtype=object)).dropna() for x in
                             str(v).split(",") if x}))
    rows = []
    for col in res.columns:
        for r in res.order:
            if (r, col) in g:
                v = g[(r, col)]
                rows.append([res.display(r), f"{short(col[0])}→{short(col[1])}", pct(v["miou"]),
                             pct(v["auroc_unknown"]), pct(v["fpr95_unknown"])])
    caption = (f"Open-set: held out of source training: {held or '?'}. Known-class mIoU (%) on the points of the known "
               "classes; unknown-point detection by the score 1 - MSP (maximum softmax probability): AUROC (%) and "
               "false-positive rate (%) on known points at 95 % true-positive rate on the held-out points, pooled over "
               "each stream's points; means over seeds.")
    return Table(["method", "pair", "known mIoU", "AUROC", "FPR95"], rows, caption, align="ll" + "r" * 3)


def label_free_table(res: Results) -> Table | None:
    """Labelled versus label-free selection (``bench.criteria.selection_table``): per method and criterion
    the candidate picked on the validation cells, its test mIoU (%) and the gap to the labelled pick; None
    when the folder has no method with two or more candidates on both validation and test cells."""
    from bench.criteria import CRITERIA, selection_table

    t = selection_table(res.cells)
    if t.empty:
        return None
    label = res.cells.drop_duplicates("method").set_index("method")["label"]
    rows = []
    for r in t.itertuples():
        params = ", ".join(f"{k}={v}" for k, v in json.loads(r.params).items())
        val = "-" if not np.isfinite(r.validation) else (pct(r.validation) if r.criterion == "labelled"
                                                          else f"{r.validation:.4g}")
        rows.append([str(label.get(r.method, r.method)), r.criterion, params, val, pct(r.test_miou),
                     f"{100 * r.gap:+.1f}", str(r.candidates)])
    crit = "; ".join(f"{k}: {c.what} ({'higher' if c.higher_is_better else 'lower'} is better)"
                     for k, c in CRITERIA.items())
    caption = ("Hyper-parameters picked on the validation cells (val splits) by labelled mIoU (labelled: the highest "
               "mean validation mIoU) and by each label-free criterion (bench/criteria.py; " + crit + "); oracle: "
               "the candidate with the highest test mIoU. validation: the pick's mean validation mIoU (%) or "
               "criterion value; test mIoU (%): mean over the test cells (test splits); gap: test mIoU of the "
               "labelled pick minus that of this pick, mIoU points (positive: the criterion loses against labels).")
    return Table(["method", "criterion", "picked", "validation", "test mIoU", "gap", "candidates"], rows, caption,
                 align="lll" + "r" * 4)


__all__ = ["label_free_table", "openset_table", "shift_corruption_cols", "shift_corruption_table", "table_visits",
           "visit_table", "visits_figure"]

