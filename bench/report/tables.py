"""The report's tables, each built once as a ``Table`` and rendered to Markdown and LaTeX by one writer.

* ``main``: mIoU (%) per row and source -> target pair (pooled confusion over the scenes of each
  seed's stream, the headline): mean ± std over seeds (std where several), in brackets the paired
  change against Source-Only and against BN-Adapt ("beyond statistics"), each starred where its
  paired test rejects; in bold the group of rows not significantly worse than the best of the
  column; ‡ where the per-scene statistic that the tests use orders two ranked rows of the column
  differently from the headline (listed in the caption); then per row its structure mIoU (wall,
  floor, ceiling), object mIoU (every other class), ECE and mean rank. Inert rows are named "no
  effect at these settings" and neither ranked nor bold.
* ``cost``: steps, adaptation / inference / teacher seconds, peak memory.
* ``cost_matched``: rows in bands of adaptation time per scene, measured in Source-Only forward
  passes of the same run, so rows are compared with rows of similar cost.
* ``stats``: per row and pair, a bootstrap interval of the headline mIoU, paired tests against
  Source-Only and against BN-Adapt (Holm-corrected over the table), and the ECE.
* ``modal``: 2D, 3D and fused mIoU per row and pair (only when some row is multi-modal: xmuda, mmtta);
  3D-only rows (TTT-KD, Source-Only, ...) show their 3D mIoU alongside, "-" for 2D and fused.

Every test and interval is ``bench.stats``'s: the units it resamples are scenes within streams, and
model seeds (scenes nested) where a column has several (``bench.stats.Design``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench import stats
from bench.report.frame import INERT_TEXT, Results

TEST_TEXT = ("paired bootstrap test on per-scene mIoU (pairs = same model seed, seed and test scene; "
             "resampling: scenes with replacement within each seed's stream, and model seeds with replacement "
             "first where a column has several, scenes nested in them; scenes that several seeds share are "
             "drawn once for all of them; centred bootstrap p-value)")
SIG_TEXT = ("bold: the best row of the column (highest mIoU) and every row not significantly worse than it "
            "(one-sided test of the best against each row, Holm-corrected over the column's rows, alpha = 0.05); "
            "controls and rows with no effect are neither ranked nor marked")


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
                 ("<", "$<$"), ("‡", "$^\\ddagger$")):
        s = s.replace(a, b)
    return s



# --------------------------------------------------------------------------------- significance
REFS = {"base": "Source-Only", "bn": "BN-Adapt"}
DISAGREE = "‡"


@dataclass
class ColumnStats:
    """Per (row, column): headline mean/std/count over seeds, the per-scene estimate on the column's
    common units, paired changes against the references with their tests; per column: the top group,
    the pairs of ranked rows ordered differently by the two statistics, the resampling design; per
    row: mean rank."""

    mean: dict[tuple[str, tuple[str, str]], float]
    std: dict[tuple[str, tuple[str, str]], float]
    n: dict[tuple[str, tuple[str, str]], int]
    groups: dict[tuple[str, str], stats.Group | None]
    rank: dict[str, tuple[float, float, float]]
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # common units per column
    per_scene: dict[tuple[str, tuple[str, str]], float] = field(default_factory=dict)
    disagree: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    designs: dict[tuple[str, str], str] = field(default_factory=dict)
    # (ref, row, col) -> (headline change, raw p, Holm-adjusted p over the ref's family)
    change: dict[tuple[str, str, tuple[str, str]], tuple[float, float, float]] = field(default_factory=dict)
    n_test: int = stats.N_TEST

    def marked(self, row: str, col: tuple[str, str]) -> bool:
        return any(row in pair for pair in self.disagree.get(col, []))


def _changes(res: Results, col_index: dict, n_test: int) -> dict:
    out = {}
    for ref in REFS:
        keys, raw = [], []
        for col in res.columns:
            for r in res.order:
                c = res.cells_of(r, col)
                if c.empty or not c[f"{ref}_cell"].map(lambda x: isinstance(x, str)).any():
                    continue
                d = res.delta(r, col, ref)
                pr = res.paired_with(r, col, ref)
                p = (stats.paired_test(pr.a, pr.b, pr.design, n_boot=n_test, seed=col_index[col])[1] if pr is not None
                     else float("nan"))
                keys.append((ref, r, col, d))
                raw.append(p)
        for (ref_, r, col, d), p, q in zip(keys, raw, stats.holm(raw)):
            out[(ref_, r, col)] = (d, p, float(q))
    return out


def _family(res: Results) -> int:
    """The largest family of paired tests in the report (comparisons against one reference)."""
    c = res.cells
    return max([c[c[f"{ref}_cell"].notna()].groupby(["row", "col"]).ngroups for ref in REFS] + [1])


def column_stats(res: Results, n_boot: int = stats.N_BOOT) -> ColumnStats:
    """Everything the main, matched-cost and stats tables need. ``n_boot``: resamples for intervals
    (mean ranks); tests use ``stats.n_boot_for`` of the largest family."""
    g = res.cells.groupby(["row", "col"])["miou"]
    mean, std, n = g.mean().to_dict(), g.std().to_dict(), g.count().to_dict()
    n_test = stats.n_boot_for(_family(res))
    col_index = {col: j for j, col in enumerate(res.columns)}
    cs = ColumnStats(mean, std, n, {}, {}, n_test=n_test)
    rank_cols = []
    for col in res.columns:
        cand = [r for r in res.ranked() if (r, col) in mean]
        rows, units, frames = res.paired(cand, col)
        if len(rows) < 2 or len(units) == 0:
            cs.groups[col] = None
            continue
        design = res.design(units)
        cs.pairs[col] = len(units)
        cs.designs[col] = design.describe()
        per = np.stack([frames[r].miou for r in rows], 1)
        est = design.nested_mean(per)
        cs.per_scene.update({(r, col): float(v) for r, v in zip(rows, est)})
        cs.groups[col] = stats.top_group({r: mean[(r, col)] for r in rows}, {r: per[:, i] for i, r in enumerate(rows)},
                                         design, n_boot=n_test, seed=col_index[col])
        flips = []
        for i, a in enumerate(rows):
            for k in range(i + 1, len(rows)):
                b = rows[k]
                h, q = mean[(a, col)] - mean[(b, col)], est[i] - est[k]
                if abs(h) > 1e-12 and abs(q) > 1e-12 and np.sign(h) != np.sign(q):
                    flips.append((a, b) if h > 0 else (b, a))  # (higher headline, higher per-scene)
        cs.disagree[col] = flips
        rank_cols.append((rows, np.stack([res.confs(frames[r]) for r in rows]), design, res.classes(col)))
    cs.rank = stats.mean_rank_bootstrap(rank_cols, n_boot=n_boot) if rank_cols else {}
    cs.change = _changes(res, col_index, n_test)
    return cs


# --------------------------------------------------------------------------------------- tables
def _delta_text(cs: ColumnStats, res: Results, r: str, col: tuple[str, str]) -> str:
    parts = []
    for ref, prefix in (("base", ""), ("bn", "BN ")):
        d, _, q = cs.change.get((ref, r, col), (float("nan"),) * 3)
        if np.isfinite(d):
            parts.append(f"{prefix}{100 * d:+.1f}" + ("*" if np.isfinite(q) and q < stats.ALPHA else ""))
    return f" ({', '.join(parts)})" if parts else ""


def _row_means(res: Results, col: str) -> dict[str, float]:
    c = res.cells
    if col not in c:
        return {}
    return c.groupby("row")[col].apply(lambda v: float(np.nanmean(v.astype(float))) if v.notna().any()
                                       else float("nan")).to_dict()


def _inert_text(res: Results) -> str:
    if not res.inert:
        return ""
    listed = "; ".join(f"{r} (as {ref}: {why})" for r, (ref, why) in sorted(res.inert_detail.items()))
    return (f" Rows marked '({INERT_TEXT})' are, in every column, indistinguishable from Source-Only or BN-Adapt "
            "(paired per-scene mIoU equivalent within ±0.1 points: the 90% bootstrap interval of the mean difference "
            "inside it) or predict what their own model predicted before adapting on ≥ 95% of scored points (for a "
            "joint recipe that model is the joint one, not Source-Only's): " + listed + ".")


def main_table(res: Results, cs: ColumnStats | None = None) -> Table:
    cs = cs or column_stats(res)
    cols = res.columns
    struct, obj, ece = _row_means(res, "miou_structure"), _row_means(res, "miou_object"), _row_means(res, "ece")
    rows, bold = [], set()
    for i, r in enumerate(res.order):
        line = [res.display(r)]
        for j, col in enumerate(cols, start=1):
            if (r, col) not in cs.mean:
                line.append("-")
                continue
            s = pct(cs.mean[(r, col)])
            if cs.n[(r, col)] > 1 and np.isfinite(cs.std[(r, col)]):
                s += f" ± {100 * cs.std[(r, col)]:.1f}"
            s += _delta_text(cs, res, r, col)
            if cs.marked(r, col):
                s += f" {DISAGREE}"
            line.append(s)
            grp = cs.groups.get(col)
            if grp is not None and r in grp.members:
                bold.add((i, j))
        line += [pct(struct.get(r, np.nan)), pct(obj.get(r, np.nan)), pct(ece.get(r, np.nan))]
        rk = cs.rank.get(r)
        line.append(f"{rk[0]:.1f} [{rk[1]:.1f}, {rk[2]:.1f}]" if rk else "-")
        rows.append(line)
    seeds = sorted(res.cells["seed"].unique())
    models = sorted(res.cells["model_seed"].unique())
    header = ["method"] + [short(t) for _, t in cols] + ["structure", "object", "ECE", "mean rank [95% CI]"]
    sources = []
    for s, _ in cols:
        if sources and sources[-1][0] == short(s):
            sources[-1] = (sources[-1][0], sources[-1][1] + 1)
        else:
            sources.append((short(s), 1))
    bn = res.bn_row
    caption = (
        f"mIoU (%) over all points of each seed's test scenes (one confusion matrix per seed's stream; a class "
        f"without a ground-truth point in them is not scored), {len(seeds)} seed(s) ({', '.join(map(str, seeds))})"
        + (f" over {len(models)} model seeds" if "model_seed" in res.cells and len(models) > 1
           and not (res.cells["model_seed"] == res.cells["seed"]).all() else "") + ": "
        "mean ± std over seeds where several; in brackets the paired change against Source-Only and, after 'BN', "
        f"against {bn or 'BN-Adapt'} (same backbone, pair, model, seed and test scenes, averaged over seeds): the "
        "gain beyond re-estimating normalisation statistics; * where the two-sided test rejects at 0.05 after Holm "
        "correction over the table's comparisons against the same reference. " + SIG_TEXT + ". Tests: "
        + TEST_TEXT + ". "
        "Structure / object: mIoU over "
        "wall, floor, ceiling / over every other class, mean over pairs and seeds. ECE (%): expected calibration "
        "error of the maximum softmax probability (15 equal-width bins, pooled over each cell's scenes), mean over "
        "pairs and seeds; '-' where the rows carry no calibration histograms. Mean rank: rank within each column "
        "among the ranked rows (1 = best), averaged over columns; 95% percentile interval from "
        f"{stats.N_BOOT} bootstrap resamples of each column's units (as for the tests; paired across rows). Rows: "
        "baseline, methods, controls; within them by adaptation cost.")
    if bn is None:
        caption += " No BN-Adapt row in these results: no change against it."
    if res.scenes.empty:
        caption += " No per-scene rows: no significance marks or ranks."
    elif all(g is None for g in cs.groups.values()):
        caption += " Fewer than two ranked rows with per-scene rows in every column: no significance marks or ranks."
    else:
        designs = sorted(set(cs.designs.values()))
        caption += f" Resampled units: {'; '.join(designs)}."
        caption += (f" Tests use {cs.n_test} resamples (smallest p {1 / (cs.n_test + 1):.1g}).")
    caption += _inert_text(res)
    flips = [f"{short(s)}→{short(t)}: " + ", ".join(f"{a} > {b}" for a, b in cs.disagree[(s, t)])
             for (s, t) in cols if cs.disagree.get((s, t))]
    if flips:
        caption += (f" {DISAGREE}: the mean per-scene mIoU (the statistic the tests use) orders this row and another "
                    "ranked row of the column the other way round from the headline mIoU (pairs listed below)."
                    f"\n{DISAGREE} A > B: A has the higher mIoU, B the higher mean per-scene mIoU. "
                    + "; ".join(flips) + ".")
    return Table(header, rows, caption, bold, sources + [("", 4)])


def cost_table(res: Results) -> Table:
    c = res.cells
    agg = {"steps_per_scene": "steps/scene", "adapt_s_per_scene": "adapt s/scene", "infer_s_per_scene": "infer s/scene",
           "teacher_s": "teacher s/cell (cold)", "peak_mem_mb": "peak mem MB"}
    fmt = {"steps_per_scene": "{:.1f}", "adapt_s_per_scene": "{:.3f}", "infer_s_per_scene": "{:.3f}",
           "teacher_s": "{:.2f}", "peak_mem_mb": "{:.0f}"}
    have = [k for k in agg if k in c]
    g = c.groupby("row")[have].mean()
    n = c.groupby("row").size()
    rows = [[res.display(r)] + [fmt[k].format(g.at[r, k]) if np.isfinite(g.at[r, k]) else "-" for k in have]
            + [str(n[r])] for r in res.order]
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
        line = [res.display(r)]
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
               "'-': the row has no 2D branch (3D-only methods). 2D and fused are as the cells recorded them (the "
               "per-scene rows hold the 3D confusion matrices only).")
    return Table(header, rows, caption, groups=groups, align="l" + "r" * (len(header) - 1), group_sep=": ")


BANDS = (0.0, 0.5, 2.0, 8.0, 32.0, 128.0, np.inf)


def _band(x: float) -> int:
    return int(np.searchsorted(BANDS, x, side="right") - 1) if np.isfinite(x) else len(BANDS) - 2


def _band_text(k: int) -> str:
    lo, hi = BANDS[k], BANDS[k + 1]
    return f"≥ {lo:g}×" if not np.isfinite(hi) else f"{lo:g}–{hi:g}×"


def _band_group(res: Results, members: list[str], cols: list, means: dict, n_test: int) -> stats.Group | None:
    """Top group of a band over the per-scene units of all its columns (units keyed by column too)."""
    per = {r: [] for r in members}
    keys: list[list] = [[], [], []]
    for col in cols:
        got, units, frames = res.paired(members, col)
        if len(got) < len(members) or len(units) == 0:
            return None
        for r in members:
            per[r].append(frames[r].miou)
        ms, ss, sc = (units.get_level_values(k) for k in range(3))
        keys[0] += list(ms)
        keys[1] += [f"{col}|{s}" for s in ss]
        keys[2] += [f"{col}|{x}" for x in sc]
    design = stats.Design.from_keys(*keys)
    return stats.top_group(means, {r: np.concatenate(v) for r, v in per.items()}, design, n_boot=n_test)


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
        group = _band_group(res, members, cols, means, cs.n_test) if len(members) > 1 else None
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
        f"(one-sided {TEST_TEXT}, over the band's pairs, Holm-corrected over the band's rows, alpha = 0.05). "
        "Controls and rows with no effect excluded." + _inert_text(res))
    return Table(["cost band", "method", "adapt s/scene", "× forward", "mIoU", "Δ vs Source-Only", "pairs"],
                 rows, caption, bold, align="llrrrrr")


def stats_table(res: Results, cs: ColumnStats | None = None, n_boot: int = stats.N_BOOT) -> Table | None:
    if res.scenes.empty:
        return None
    cs = cs or column_stats(res, n_boot=n_boot)
    lines = []
    ece = res.cells.groupby(["row", "col"])["ece"].mean() if "ece" in res.cells else None
    for j, col in enumerate(res.columns):
        for r in res.order:
            f = res.per_scene(r, col)
            if f is None:
                continue
            c = res.cells_of(r, col)
            lo, hi = stats.bootstrap_ci(res.confs(f), res.design(f.index), res.classes(col), n_boot=n_boot, seed=j)
            line = [res.display(r), f"{col[0]} → {col[1]}", str(len(c)), pct(c["miou"].mean()),
                    f"[{pct(lo)}, {pct(hi)}]"]
            for ref in REFS:
                d, p, q = cs.change.get((ref, r, col), (float("nan"),) * 3)
                line += [f"{100 * d:+.1f}" if np.isfinite(d) else "", f"{p:.3g}" if np.isfinite(p) else "",
                         f"{q:.3g}" if np.isfinite(q) else ""]
            line.append(pct(ece.get((r, col), np.nan)) if ece is not None else "-")
            lines.append(line)
    caption = (
        "mIoU (%): mean over seeds of the cells' mIoU (pooled confusion over each seed's scenes). CI: 95% percentile "
        f"bootstrap ({n_boot} resamples of the units: scenes within each seed's stream, model seeds first where "
        "several; per resample each stream's confusion matrices are summed and its mIoU recomputed, then averaged "
        "as the headline). Δ: change of the headline against Source-Only / BN-Adapt (same backbone, pair, model, "
        f"seed and scenes); p: two-sided {TEST_TEXT}; p (Holm): Holm-corrected over every comparison against the "
        "same reference in this table. ECE (%): pooled over the cells' scenes, mean over seeds." + _inert_text(res))
    return Table(["method", "source → target", "seeds", "mIoU", "95% CI", "Δ vs Source-Only", "p", "p (Holm)",
                  "Δ vs BN-Adapt", "p (BN)", "p (BN, Holm)", "ECE"], lines, caption, align="llrrrrrrrrrr")
