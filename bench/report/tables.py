"""The report's tables, each built once as a ``Table`` and rendered to Markdown and LaTeX by one writer.

* ``main``: mIoU (%) per row and source -> target pair: mean ± std over seeds (std where several),
  in brackets the paired change against Source-Only (same backbone, pair, seed and scenes), in bold
  the group of rows not significantly worse than the best of the column, and each row's mean rank.
* ``cost``: steps, adaptation / inference / teacher seconds, peak memory.
* ``cost_matched``: rows in bands of adaptation time per scene, measured in Source-Only forward
  passes of the same run, so rows are compared with rows of similar cost.
* ``stats``: per row and pair, a bootstrap interval over seeds and scenes and a paired test against
  Source-Only, Holm-corrected over the table.
* ``modal``: 2D, 3D and fused mIoU per row and pair (only when some row is multi-modal: xmuda, mmtta);
  3D-only rows (TTT-KD, Source-Only, ...) show their 3D mIoU alongside, "-" for 2D and fused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench import stats
from bench.report.frame import Results

SIG_TEXT = ("bold: the best row of the column and every row not significantly worse than it (one-sided "
            "Wilcoxon signed-rank test of the best against each row on paired per-scene mIoU, pairs = same "
            "seed and test scene, Holm-corrected over the column's rows, alpha = 0.05); controls are "
            "neither ranked nor marked")


def short(d: str) -> str:
    return d.replace("synth-", "s-")


def pct(x: float) -> str:
    return f"{100 * x:.1f}" if np.isfinite(x) else "-"


@dataclass
class Table:
    """A header row, body rows of text, cells to emphasise, a caption and optional column groups
    ((label, span) pairs spanning the columns after the first): a spanning row in LaTeX, a prefix
    ``group + group_sep`` of each column name in Markdown."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    bold: set[tuple[int, int]] = field(default_factory=set)
    groups: list[tuple[str, int]] = field(default_factory=list)
    align: str = ""  # LaTeX column spec; default l then c
    group_sep: str = " → "

    def _md_header(self) -> list[str]:
        if not self.groups:
            return self.header
        prefix = [""] + [g for g, n in self.groups for _ in range(n)]
        return [f"{p}{self.group_sep}{h}" if p else h for p, h in zip(prefix, self.header)]

    def to_markdown(self) -> str:
        def cell(i, j, s):
            return f"**{s}**" if (i, j) in self.bold and s not in ("", "-") else s

        out = ["| " + " | ".join(self._md_header()) + " |", "|" + "---|" * len(self.header)]
        out += ["| " + " | ".join(cell(i, j, s) for j, s in enumerate(r)) + " |" for i, r in enumerate(self.rows)]
        return "\n".join(out) + ("\n\n" + self.caption if self.caption else "") + "\n"

    def to_latex(self) -> str:
        def cell(i, j, s):
            s = tex(s)
            return f"\\textbf{{{s}}}" if (i, j) in self.bold and s not in ("", "-") else s

        spec = self.align or "l" + "c" * (len(self.header) - 1)
        out = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        if self.groups:
            out.append(" & " + " & ".join(f"\\multicolumn{{{n}}}{{c}}{{{tex(g)}}}" for g, n in self.groups) + " \\\\")
        out += [" & ".join(tex(h) for h in self.header) + " \\\\", "\\midrule"]
        out += [" & ".join(cell(i, j, s) for j, s in enumerate(r)) + " \\\\" for i, r in enumerate(self.rows)]
        out += ["\\bottomrule", "\\end{tabular}"]
        if self.caption:
            out += ["% " + line for line in self.caption.splitlines()]
        return "\n".join(out) + "\n"


def tex(s: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"),
                 ("±", "$\\pm$"), ("→", "$\\to$"), ("×", "$\\times$"), ("Δ", "$\\Delta$"), ("≥", "$\\geq$"),
                 ("<", "$<$")):
        s = s.replace(a, b)
    return s


# --------------------------------------------------------------------------------- significance
@dataclass
class ColumnStats:
    """Per column: mean/std over seeds, the change against the baseline, the top group."""

    mean: dict[tuple[str, tuple[str, str]], float]
    std: dict[tuple[str, tuple[str, str]], float]
    n: dict[tuple[str, tuple[str, str]], int]
    groups: dict[tuple[str, str], stats.Group | None]
    rank: dict[str, tuple[float, float, float]]
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # paired (seed, scene) values per column


def column_stats(res: Results, n_boot: int = stats.N_BOOT) -> ColumnStats:
    g = res.cells.groupby(["row", "col"])["miou"]
    mean, std, n = g.mean().to_dict(), g.std().to_dict(), g.count().to_dict()
    groups: dict = {}
    npairs: dict = {}
    rank_cols = []
    for col in res.columns:
        cand = [r for r in res.ranked() if (r, col) in mean]
        rows, pairs, frames = res.paired(cand, col)
        if len(rows) < 2 or len(pairs) == 0:
            groups[col] = None
            continue
        npairs[col] = len(pairs)
        groups[col] = stats.top_group({r: mean[(r, col)] for r in rows},
                                      {r: frames[r]["miou"].to_numpy() for r in rows})
        rank_cols.append((rows, np.stack([res.confs(frames[r]) for r in rows]), res.classes(col)))
    rank = stats.mean_rank_bootstrap(rank_cols, n_boot=n_boot) if rank_cols else {}
    return ColumnStats(mean, std, n, groups, rank, npairs)


# --------------------------------------------------------------------------------------- tables
def main_table(res: Results, cs: ColumnStats | None = None) -> Table:
    cs = cs or column_stats(res)
    cols = res.columns
    rows, bold = [], set()
    for i, r in enumerate(res.order):
        line = [r]
        for j, col in enumerate(cols, start=1):
            if (r, col) not in cs.mean:
                line.append("-")
                continue
            s = pct(cs.mean[(r, col)])
            if cs.n[(r, col)] > 1 and np.isfinite(cs.std[(r, col)]):
                s += f" ± {100 * cs.std[(r, col)]:.1f}"
            if res.roles[r] != "baseline":
                d = res.delta(r, col)
                if np.isfinite(d):
                    s += f" ({100 * d:+.1f})"
            line.append(s)
            grp = cs.groups.get(col)
            if grp is not None and r in grp.members:
                bold.add((i, j))
        rk = cs.rank.get(r)
        line.append(f"{rk[0]:.1f} [{rk[1]:.1f}, {rk[2]:.1f}]" if rk else "-")
        rows.append(line)
    seeds = sorted(res.cells["seed"].unique())
    header = ["method"] + [short(t) for _, t in cols] + ["mean rank [95% CI]"]
    sources = []
    for s, _ in cols:
        if sources and sources[-1][0] == short(s):
            sources[-1] = (sources[-1][0], sources[-1][1] + 1)
        else:
            sources.append((short(s), 1))
    caption = (
        f"mIoU (%) over all points of each target's test scenes, {len(seeds)} seed(s) ({', '.join(map(str, seeds))}): "
        "mean ± std over seeds where several; in brackets the paired change against Source-Only (same backbone, "
        "pair, seed and test scenes, averaged over seeds). " + SIG_TEXT + ". Mean rank: rank within each column "
        "among the non-control rows (1 = best), averaged over columns; 95% percentile interval from 1000 bootstrap "
        "resamples of seeds and test scenes within each column (paired across rows). Rows: baseline, methods, "
        "controls; within them by adaptation cost.")
    if res.scenes.empty:
        caption += " No per-scene rows: no significance marks or ranks."
    elif all(g is None for g in cs.groups.values()):
        caption += " Fewer than two ranked rows with per-scene rows in every column: no significance marks or ranks."
    elif cs.pairs:
        n = min(cs.pairs.values())
        caption += (f" With n paired (seed, scene) values per column (here at least {n}) the smallest one-sided "
                    f"p is 2^-n = {2.0 ** -n:.2g}, so few scenes keep the bold group wide.")
    return Table(header, rows, caption, bold, sources + [("", 1)])


def cost_table(res: Results) -> Table:
    c = res.cells
    agg = {"steps_per_scene": "steps/scene", "adapt_s_per_scene": "adapt s/scene", "infer_s_per_scene": "infer s/scene",
           "teacher_s": "teacher s/cell (cold)", "peak_mem_mb": "peak mem MB"}
    fmt = {"steps_per_scene": "{:.1f}", "adapt_s_per_scene": "{:.3f}", "infer_s_per_scene": "{:.3f}",
           "teacher_s": "{:.2f}", "peak_mem_mb": "{:.0f}"}
    have = [k for k in agg if k in c]
    g = c.groupby("row")[have].mean()
    n = c.groupby("row").size()
    rows = [[r] + [fmt[k].format(g.at[r, k]) if np.isfinite(g.at[r, k]) else "-" for k in have] + [str(n[r])]
            for r in res.order]
    kind = str(c["mem_kind"].iloc[0]) if "mem_kind" in c else "unknown"
    return Table(["method"] + [agg[k] for k in have] + ["cells"], rows,
                 f"Means over cells. Peak memory: {kind} (on CPU the resident-set growth while the method runs).",
                 align="l" + "r" * (len(have) + 1))


MODAL = (("miou_2d", "2D"), ("miou_3d", "3D"), ("miou_fused", "fused"))


def modal_table(res: Results) -> Table | None:
    """2D / 3D / fused mIoU (%) per row and source -> target pair, mean over seeds; None when no cell has a
    2D mIoU (no multi-modal row). Results written before the ``miou_3d`` column take ``miou`` as 3D."""
    c = res.cells.copy()
    if "miou_2d" not in c or not np.isfinite(c["miou_2d"].astype(float)).any():
        return None
    if "miou_3d" not in c:
        c["miou_3d"] = c["miou"]
    c["miou_3d"] = c["miou_3d"].astype(float).fillna(c["miou"].astype(float))
    for k in ("miou_2d", "miou_fused"):
        c[k] = c[k].astype(float) if k in c else np.nan
    g = c.groupby(["row", "col"])[[k for k, _ in MODAL]].mean()
    cols = res.columns
    rows = []
    for r in res.order:
        line = [r]
        for col in cols:
            for k, _ in MODAL:
                v = g[k].get((r, col), np.nan)
                line.append(pct(v))
        rows.append(line)
    header = ["method"] + [name for _ in cols for _, name in MODAL]
    groups = [(f"{short(s)}→{short(t)}", len(MODAL)) for s, t in cols]
    caption = ("mIoU (%) of the 2D branch, the 3D prediction and their fusion, mean over seeds. 2D: points seen by a "
               "view only (unseen points have no 2D prediction and are left out); 3D: all points (the main table's "
               "value); fused: mean of the 2D and 3D softmaxes on seen points, the 3D prediction on unseen ones. "
               "'-': the row has no 2D branch (3D-only methods).")
    return Table(header, rows, caption, groups=groups, align="l" + "r" * (len(header) - 1), group_sep=": ")


BANDS = (0.0, 0.5, 2.0, 8.0, 32.0, 128.0, np.inf)


def _band(x: float) -> int:
    return int(np.searchsorted(BANDS, x, side="right") - 1) if np.isfinite(x) else len(BANDS) - 2


def _band_text(k: int) -> str:
    lo, hi = BANDS[k], BANDS[k + 1]
    return f"≥ {lo:g}×" if not np.isfinite(hi) else f"{lo:g}–{hi:g}×"


def cost_matched_table(res: Results, cs: ColumnStats | None = None) -> Table | None:
    """Rows grouped into bands of adaptation seconds per scene, in units of the baseline's inference
    seconds per scene (one forward pass) on the same run; within a band, mean mIoU over the pairs every
    row of the band has, the paired change against Source-Only and the band's top group."""
    cs = cs or column_stats(res)
    c = res.cells
    base = c[c["role"] == "baseline"]
    unit = float((base if len(base) else c)["infer_s_per_scene"].mean())
    unit_text = "one Source-Only forward pass" if len(base) else "one forward pass (mean over rows: no Source-Only)"
    if not np.isfinite(unit) or unit <= 0:
        return None
    cost = c.groupby("row")["adapt_s_per_scene"].mean() / unit
    ranked = res.ranked()
    if len(ranked) < 2:
        return None
    band = {r: _band(cost[r]) for r in ranked}
    rows, bold = [], set()
    for k in sorted(set(band.values())):
        members = [r for r in ranked if band[r] == k]
        cols = [col for col in res.columns if all((r, col) in cs.mean for r in members)]
        if not cols:
            continue
        means = {r: float(np.mean([cs.mean[(r, col)] for col in cols])) for r in members}
        deltas = {}
        for r in members:
            d = [res.delta(r, col) for col in cols] if res.roles[r] != "baseline" else []
            d = [x for x in d if np.isfinite(x)]
            deltas[r] = float(np.mean(d)) if d else float("nan")
        group = None
        if len(members) > 1:
            per = {r: [] for r in members}
            ok = True
            for col in cols:
                got, pairs, frames = res.paired(members, col)
                if len(got) < len(members) or len(pairs) == 0:
                    ok = False
                    break
                for r in members:
                    per[r].append(frames[r]["miou"].to_numpy())
            if ok:
                group = stats.top_group(means, {r: np.concatenate(v) for r, v in per.items()})
        for r in sorted(members, key=lambda r: -means[r]):
            if group is not None and r in group.members:
                bold.add((len(rows), 4))
            rows.append([_band_text(k), r, f"{c[c['row'] == r]['adapt_s_per_scene'].mean():.3f}", f"{cost[r]:.1f}",
                         pct(means[r]), f"{100 * deltas[r]:+.1f}" if np.isfinite(deltas[r]) else "-", str(len(cols))])
    caption = (
        f"Rows at matched adaptation cost. Cost band: adaptation seconds per scene in units of {unit_text} "
        f"on the same run ({unit:.3f} s per scene), bands 4× apart. mIoU: mean over the pairs every "
        "row of the band has (column 'pairs'); Δ: paired change against Source-Only (same backbone, pair, seed "
        "and scenes). Bold: within the band, the best row and every row not significantly worse than it "
        "(one-sided Wilcoxon signed-rank test on per-scene mIoU pooled over the band's pairs, seeds and scenes, "
        "Holm-corrected over the band's rows, alpha = 0.05). Controls excluded.")
    return Table(["cost band", "method", "adapt s/scene", "× forward", "mIoU", "Δ vs Source-Only", "pairs"],
                 rows, caption, bold, align="llrrrrr")


def stats_table(res: Results, n_boot: int = stats.N_BOOT) -> Table | None:
    if res.scenes.empty:
        return None
    lines, raw = [], []
    for col in res.columns:
        for r in res.order:
            f = res.per_scene(r, col)
            if f is None:
                continue
            c = res.cells_of(r, col)
            lo, hi = stats.bootstrap_ci(res.confs(f), res.classes(col), n_boot=n_boot)
            d, p = float("nan"), float("nan")
            if res.roles[r] != "baseline":
                a, b = res.paired_with_baseline(r, col)
                if len(a):
                    d, p = stats.paired_test(a, b)
            raw.append(p)
            lines.append([r, f"{col[0]} → {col[1]}", str(len(c)), pct(c["miou"].mean()), f"[{pct(lo)}, {pct(hi)}]",
                          f"{100 * d:+.1f}" if np.isfinite(d) else "", f"{p:.3g}" if np.isfinite(p) else ""])
    adj = stats.holm(raw)
    for line, q in zip(lines, adj):
        line.append(f"{q:.3g}" if np.isfinite(q) else "")
    caption = (
        "mIoU (%): mean over seeds of the cells' mIoU. CI: 95% percentile bootstrap (1000 resamples of seeds, "
        "and of test scenes within them; confusion matrices summed per resampled seed, mIoU averaged over "
        "seeds). Δ: mean per-scene mIoU difference to Source-Only on the same seed and scenes (same "
        "backbone and pair); p: two-sided Wilcoxon signed-rank test on those paired differences over seeds "
        "and scenes; p (Holm): Holm-corrected over every comparison in this table.")
    return Table(["method", "source → target", "seeds", "mIoU", "95% CI", "Δ vs Source-Only", "p (Wilcoxon)",
                  "p (Holm)"], lines, caption, align="llrrrrrr")
