"""The report (rows by role and configuration, significance groups, ranks, matched-cost table, one
table writer, the figure registry) and ``bench compare``, on synthetic results and on a committed
reference folder."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bench import rescore, stats
from bench.compare import SINGLE_SEED_TOL, compare, compare_frames, default_reference
from bench.data.classes import CLASSES, NUM_CLASSES
from bench.errors import BenchError
from bench.metrics import miou
from bench.report import Results, column_stats, cost_matched_table, main_table, make_report, stats_table
from bench.report.figures import FIGURES, figure, figures, place_labels, reliability_table
from bench.report.frame import with_roles
from bench.report.tables import pct
from bench.store import MARKER

REPO = Path(__file__).resolve().parents[1]
REFERENCE = next((p for p in (REPO / "results" / "reference" / "id_ood", REPO / "results" / "id_ood")
                  if (p / "cells.parquet").is_file()), None)


def _conf(q: float, n: int = 10_000) -> list[int]:
    """A 2-class (wall, floor) confusion of n points per class with a fraction q right per class."""
    c = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    tp = int(round(n * q))
    c[0, 0], c[0, 1], c[1, 1], c[1, 0] = tp, n - tp, tp, n - tp
    return c.reshape(-1).tolist()


def row(label, method="tent", quality=0.5, recipe="source", train_on="source", teacher="", params=None,
        backbone="spunet", adapt_s=0.1, noise=0.0, confidence=None):
    return dict(label=label, method=method, quality=quality, recipe=recipe, train_on=train_on, teacher=teacher,
                params=params or {}, backbone=backbone, adapt_s=adapt_s, noise=noise, confidence=confidence)


def fake(rows, pairs=(("a", "b"), ("a", "c")), seeds=(0,), scenes=12, role_column=True, seed=0, v3=False):
    """Cells and scenes frames: each row's per-scene accuracy is ``quality`` (a float or a function of
    (source, target, seed)) plus seeded noise of size ``noise`` per scene. ``v3``: protocol v3 rows (a
    ``model_seed`` column, one model; each seed draws its own scenes). A row with ``confidence`` gets
    calibration histograms: every point in the bin of that confidence."""
    rng = np.random.default_rng(seed)
    cells, scene_rows = [], []
    for spec in rows:
        for (src, tgt) in pairs:
            for s in seeds:
                q0 = spec["quality"](src, tgt, s) if callable(spec["quality"]) else spec["quality"]
                cid = f"{spec['label']}|{json.dumps(spec['params'])}|{spec['backbone']}|{src}|{tgt}|{s}"
                confs = []
                for i in range(scenes):
                    q = float(np.clip(q0 + spec["noise"] * rng.standard_normal(), 0, 1))
                    conf = _conf(q)
                    confs.append(np.asarray(conf).reshape(NUM_CLASSES, NUM_CLASSES))
                    scene_rows.append(dict(cell_id=cid, scene=f"test_{s}_{i:04d}" if v3 else f"test_{i:04d}",
                                           index=i, n_points=200, miou=miou(confs[-1], (0, 1)), conf=conf))
                    if spec["confidence"] is not None:
                        n, b = int(confs[-1].sum()), min(int(spec["confidence"] * 15), 14)
                        count, csum, right = np.zeros(15), np.zeros(15), np.zeros(15)
                        count[b], csum[b], right[b] = n, n * spec["confidence"], np.trace(confs[-1])
                        scene_rows[-1].update(calib_count=count.tolist(), calib_conf=csum.tolist(),
                                              calib_correct=right.tolist())
                cell = dict(cell_id=cid, status="ok", error="", miou=miou(np.sum(confs, 0), (0, 1)),
                            eval_classes="wall,floor", method=spec["method"], label=spec["label"],
                            params=json.dumps(spec["params"]), episodic=True, recipe=spec["recipe"],
                            train_on=spec["train_on"], teacher=spec["teacher"], backbone=spec["backbone"],
                            backbone_cfg=json.dumps({"name": spec["backbone"]}), source=src, target=tgt, seed=s,
                            n_train=8, n_test=scenes, features="color", train_cfg="{}",
                            steps_per_scene=1.0, adapt_s_per_scene=spec["adapt_s"], infer_s_per_scene=0.1,
                            teacher_s=0.0, peak_mem_mb=10.0, mem_kind="cpu_rss_delta")
                if v3:
                    cell["model_seed"] = 0
                cells.append(cell)
    cells = pd.DataFrame(cells)
    if role_column:
        cells = with_roles(cells)
    return cells, pd.DataFrame(scene_rows)


def results(*a, **k) -> Results:
    return Results.from_frames(*fake(*a, **k))


BASE = row("Source-Only", "source", 0.5, adapt_s=0.0)


# ------------------------------------------------------------------------------------- statistics
def test_holm_matches_hand_computation():
    # sorted p: 0.01*3=0.03, 0.02*2=0.04, 0.04*1=0.04 (monotone); NaN ignored
    assert np.allclose(stats.holm([0.04, 0.01, np.nan, 0.02])[[0, 1, 3]], [0.04, 0.03, 0.04])
    assert np.isnan(stats.holm([0.04, 0.01, np.nan, 0.02])[2])
    assert stats.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_bootstrap_over_units_covers_the_estimate_and_narrows_with_more_scenes():
    # API changed (issue 27): confusion matrices per unit (U, C, C) with a Design of (model seed, seed, scene)
    rng = np.random.default_rng(0)

    def confs(models, scenes):
        c = np.stack([np.asarray(_conf(0.5 + 0.2 * rng.standard_normal())).reshape(NUM_CLASSES, NUM_CLASSES)
                      for _ in range(models) for _ in range(scenes)])
        keys = [(m, 0, f"{m}/{i}") for m in range(models) for i in range(scenes)]
        return c, stats.Design.from_keys(*zip(*keys))

    (few, d_few), (many, d_many) = confs(2, 6), confs(3, 60)
    for c, d, m in ((few, d_few, 2), (many, d_many, 3)):
        lo, hi = stats.bootstrap_ci(c, d, (0, 1))
        est = np.mean([miou(s.sum(0), (0, 1)) for s in c.reshape(m, -1, NUM_CLASSES, NUM_CLASSES)])
        assert lo < est < hi
    width = lambda c, d: np.subtract(*stats.bootstrap_ci(c, d, (0, 1))[::-1])  # noqa: E731
    assert width(many, d_many) < width(few, d_few)


def test_top_group_keeps_ties_and_drops_a_clearly_worse_candidate():
    rng = np.random.default_rng(1)
    best = 0.5 + 0.05 * rng.standard_normal(40)
    paired = {"best": best, "tie": best + 0.001 * rng.standard_normal(40), "worse": best - 0.05}
    g = stats.top_group({k: float(v.mean()) for k, v in paired.items()}, paired)
    assert g.best in ("best", "tie") and g.members == {"best", "tie"}
    assert g.p_holm["worse"] < 0.05


def test_mean_rank_interval_contains_the_point_and_orders_methods():
    res = results([BASE, row("Good", quality=0.8, noise=0.05), row("Bad", quality=0.3, noise=0.05)], seeds=(0, 1))
    cs = column_stats(res, n_boot=200)
    assert cs.rank["Good"][0] == 1.0 and cs.rank["Good"][1:] == (1.0, 1.0)
    assert cs.rank["Bad"][0] == 3.0
    for m, lo, hi in cs.rank.values():
        assert lo <= m <= hi


# ------------------------------------------------------------------------------- rows and tables
def test_rows_found_by_role_and_columns_not_by_label_text():
    rows = [row("Source-Only [x]", "source", 0.5, adapt_s=0.0),  # the baseline, whatever its label says
            row("Oracle-like", "my_new_method", 0.6),  # a new method, not a control despite its label
            row("Upper", "source", 0.9, train_on="target", adapt_s=0.0),  # a control: trained on the target
            row("Distil", "my_kd", 0.9, teacher="oracle(noise=0.3)")]  # a control: label-derived teacher
    for role_column in (True, False):  # older folders lack the role column: derived from the same columns
        res = results(rows, role_column=role_column)
        assert res.roles == {"Source-Only [x]": "baseline", "Oracle-like": "method", "Upper": "control",
                             "Distil [oracle(noise=0.3)]": "control"}
        assert res.order == ["Source-Only [x]", "Oracle-like", "Upper", "Distil [oracle(noise=0.3)]"]
        table = main_table(res, column_stats(res, n_boot=50))
        md = table.to_markdown()
        # controls are better but neither bold nor ranked; the new method is best among the rest
        assert "| Upper |" in md and "| Distil [oracle(noise=0.3)] |" in md
        upper = next(r for r in table.rows if r[0] == "Upper")
        assert upper[-1] == "-" and not any((table.rows.index(upper), j) in table.bold for j in range(4))
        new = table.rows.index(next(r for r in table.rows if r[0] == "Oracle-like"))
        assert {(new, 1), (new, 2)} <= table.bold and table.rows[new][-1].startswith("1.0")


def test_each_backbone_is_compared_with_its_own_source_only():
    rows = []
    for bb, base in (("spunet", 0.6), ("pointnet2", 0.3)):
        rows += [row("Source-Only", "source", base, backbone=bb, adapt_s=0.0),
                 row("TTT-KD", "ttt_kd", base + 0.1, backbone=bb, teacher="synth2d")]
    res = results(rows, pairs=(("a", "b"),))
    assert res.order == ["Source-Only pointnet2", "Source-Only spunet", "TTT-KD [synth2d] pointnet2",
                         "TTT-KD [synth2d] spunet"]
    for bb, base in (("spunet", 0.6), ("pointnet2", 0.3)):
        want = miou(np.asarray(_conf(base + 0.1)).reshape(NUM_CLASSES, NUM_CLASSES), (0, 1)) - \
            miou(np.asarray(_conf(base)).reshape(NUM_CLASSES, NUM_CLASSES), (0, 1))
        assert res.delta(f"TTT-KD [synth2d] {bb}", ("a", "b")) == pytest.approx(want)
    md = main_table(res, column_stats(res, n_boot=50)).to_markdown()
    # the change is the same on every scene: significant, starred (issue 27)
    assert f"({100 * res.delta('TTT-KD [synth2d] pointnet2', ('a', 'b')):+.1f}*)" in md


def test_several_seeds_show_mean_and_std_and_paired_delta():
    q = lambda s, t, seed: 0.5 + 0.1 * seed  # noqa: E731 - seed 0 and 1 differ by 10 points of accuracy
    res = results([row("Source-Only", "source", q, adapt_s=0.0),
                   row("M", quality=lambda s, t, seed: q(s, t, seed) + 0.05)], seeds=(0, 1), pairs=(("a", "b"),))
    c = res.cells
    m = c[c["row"] == "M"]["miou"]
    d = (m.to_numpy() - c[c["row"] == "Source-Only"].sort_values("seed")["miou"].to_numpy()).mean()
    line = next(r for r in main_table(res, column_stats(res, n_boot=50)).rows if r[0] == "M")
    # +5 points on every scene of both seeds: the paired test rejects, so the change is starred (issue 27)
    assert line[1] == f"{100 * m.mean():.1f} ± {100 * m.std():.1f} ({100 * d:+.1f}*)"


def test_clearly_worse_method_leaves_the_bold_group_and_stats_table_is_holm_corrected():
    res = results([BASE, row("Best", quality=0.8, noise=0.02), row("Same", quality=0.8, noise=0.02),
                   row("Worse", quality=0.6, noise=0.02)], seeds=(0, 1), scenes=16)
    table = main_table(res, column_stats(res, n_boot=50))
    idx = {r[0]: i for i, r in enumerate(table.rows)}
    for j in (1, 2):
        assert (idx["Best"], j) in table.bold and (idx["Same"], j) in table.bold
        assert (idx["Worse"], j) not in table.bold and (idx["Source-Only"], j) not in table.bold
    assert "Holm" in table.caption and "bootstrap test" in table.caption  # the test changed (issue 27)
    st = stats_table(res, n_boot=50)
    raw = [float(r[6]) for r in st.rows if r[6]]
    adj = [float(r[7]) for r in st.rows if r[7]]
    assert all(a >= r for a, r in zip(adj, raw)) and "Holm" in st.caption


def test_one_writer_renders_the_same_table_to_markdown_and_latex():
    res = results([BASE, row("M_1", quality=0.7, noise=0.01)], seeds=(0, 1))
    table = main_table(res, column_stats(res, n_boot=50))
    md, tex = table.to_markdown(), table.to_latex()
    assert tex.startswith("\\begin{tabular}") and "\\bottomrule" in tex
    body_md = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| method")]
    body_tex = [ln for ln in tex.splitlines() if ln.endswith("\\\\") and not ln.startswith(("method", " &"))]
    assert len(body_md) == len(body_tex) == len(table.rows)
    assert md.count("**") == 2 * len(table.bold) and tex.count("\\textbf{") == len(table.bold)
    assert "M\\_1" in tex and "$\\pm$" in tex and "±" in md


def test_matched_cost_table_bands_methods_by_adaptation_time():
    res = results([BASE, row("Cheap", quality=0.6, adapt_s=0.05), row("Mid", quality=0.55, adapt_s=0.3),
                   row("Dear", quality=0.7, adapt_s=1.0, noise=0.01), row("Dear2", quality=0.53, adapt_s=1.5)])
    # (Dear2 had Source-Only's quality exactly, which is now an inert row, neither ranked nor banded: 0.53)
    t = cost_matched_table(res, column_stats(res, n_boot=50))
    band = {r[1]: r[0] for r in t.rows}
    # unit = Source-Only forward 0.1 s: 0.5x, 3x, 10x and 15x
    assert band == {"Source-Only": "0–0.5×", "Cheap": "0.5–2×", "Mid": "2–8×", "Dear": "8–32×", "Dear2": "8–32×"}
    idx = {r[1]: i for i, r in enumerate(t.rows)}
    assert (idx["Dear"], 4) in t.bold and (idx["Dear2"], 4) not in t.bold
    assert "Source-Only forward" in t.caption


# ---------------------------------------------------------------------------------------- figures
def test_figure_registry_draws_what_applies_and_a_new_parameter_gets_its_curve(tmp_path):
    rows = [BASE] + [row("New", "brand_new", 0.5 + a / 10, params={"alpha": a}) for a in (1, 2, 3)]
    res = results(rows)
    drawn = []
    entry = figure("never", lambda r: False)(lambda r: drawn.append(1) or iter(()))
    try:
        names = {p.name for p in figures(res, tmp_path)}
    finally:
        FIGURES.remove(next(f for f in FIGURES if f.name == "never"))
    assert entry is not None and not drawn
    assert {"fig_alpha.png", "fig_alpha.svg", "fig_pareto.png", "fig_pareto.svg"} <= names
    # no teachers, no corrupted targets and no per-class columns in these rows: those figures do not apply
    assert not names & {"fig_teachers.png", "fig_corruptions.png", "fig_per_class_iou.png"}


def test_figures_are_byte_identical_when_drawn_again(tmp_path):
    """Regenerating a committed report rewrites no figure whose data did not change (no date, fixed SVG ids)."""
    rows = [BASE] + [row("New", "brand_new", 0.5 + a / 10, params={"alpha": a}) for a in (1, 2, 3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = {p.name: p.read_bytes() for p in figures(results(rows), tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in figures(results(rows), tmp_path / "b")}
    assert first and any(n.endswith(".svg") for n in first) and first == second


def test_pareto_labels_do_not_overlap_even_for_coincident_points():
    pts = np.array([[100.0, 100.0]] * 5 + [[104.0, 101.0], [300.0, 50.0]])
    w, h = 16.0, 11.0
    c = place_labels(pts, (w, h))
    for i in range(len(c)):
        for j in range(i):
            assert abs(c[i, 0] - c[j, 0]) >= w or abs(c[i, 1] - c[j, 1]) >= h


# ------------------------------------------------------------------------------ committed folder
@pytest.mark.skipif(REFERENCE is None, reason="no committed id_ood reference folder")
def test_report_on_the_committed_id_ood_reference(tmp_path):
    folder = tmp_path / "id_ood"
    folder.mkdir()
    for name in ("cells.parquet", "scenes.parquet"):
        shutil.copy(REFERENCE / name, folder / name)
    written = {p.name for p in make_report(folder)}
    assert {"table_main.md", "table_main.tex", "table_cost.md", "table_cost_matched.md", "table_stats.md",
            "fig_pareto.png", "fig_per_class_iou.png"} <= written
    md = (folder / "report" / "table_main.md").read_text()
    lines = [ln.split(" | ")[0].lstrip("| ") for ln in md.splitlines()[2:] if ln.startswith("| ")]
    assert lines[0] == "Source-Only" and lines[-1] == "Oracle"
    # rows with selected values name them: "TTT-KD (lr=0.0001, steps=25) [synth2d]"
    assert any(ln.startswith("TTT-KD (") and ln.endswith("[synth2d]") for ln in lines)
    assert "**" in md and "mean rank" in md
    assert "Oracle" not in (folder / "report" / "table_cost_matched.md").read_text()
    assert "fig_pareto.svg" in written
    # in a committed reference folder (its marker present) figures are PNG only, and old SVGs go
    (folder / MARKER).write_text("")
    again = {p.name for p in make_report(folder)}
    assert "fig_pareto.png" in again and not any(n.endswith(".svg") for n in again)
    assert not list((folder / "report").glob("*.svg"))


# ---------------------------------------------------------------------------------------- compare
def _write(folder: Path, cells: pd.DataFrame, scenes: pd.DataFrame, grid: str = "g") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cells.to_parquet(folder / "cells.parquet")
    scenes.to_parquet(folder / "scenes.parquet")
    (folder / "env.json").write_text(json.dumps({"grid": grid}))
    return folder


def _conf_of_miou(m: float) -> list[int]:
    """A confusion as ``_conf`` whose mIoU is ``m`` (q right per class: mIoU = q / (2 - q))."""
    return _conf(2 * m / (1 + m))


def _shift(cells, scenes, label, by, only_scene=None):
    """Move the per-scene mIoU of ``label``'s scenes by ``by`` (clipped to [0, 1]) through their confusion
    matrices (compare scores from them since issue 27; shifting the recorded mIoU alone no longer counts)."""
    cells, scenes = cells.copy(), scenes.copy()
    ids = set(cells.loc[cells["label"] == label, "cell_id"])
    sel = scenes["cell_id"].isin(ids) & ((scenes["scene"] == only_scene) if only_scene else True)
    for i in scenes.index[sel]:
        m = float(np.clip(miou(np.asarray(scenes.at[i, "conf"]).reshape(NUM_CLASSES, NUM_CLASSES)) + by, 0, 1))
        scenes.at[i, "conf"] = _conf_of_miou(m)
        scenes.at[i, "miou"] = m
    pooled = {cid: miou(np.sum([np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES) for c in g["conf"]], 0))
              for cid, g in scenes[scenes["cell_id"].isin(ids)].groupby("cell_id")}
    cells.loc[cells["cell_id"].isin(ids), "miou"] = cells.loc[cells["cell_id"].isin(ids), "cell_id"].map(pooled)
    return cells, scenes


def test_compare_agrees_with_itself_and_flags_a_broken_method(tmp_path):
    cells, scenes = fake([BASE, row("M", quality=0.7, noise=0.05)], scenes=8)
    ref = _write(tmp_path / "ref", cells, scenes)
    con = Console(record=True, width=200)
    assert compare(_write(tmp_path / "same", cells, scenes), ref, con) == 0
    broken = _write(tmp_path / "broken", *_shift(cells, scenes, "M", -0.2))
    con = Console(record=True, width=200)
    assert compare(broken, ref, con) == 1
    out = con.export_text()
    assert "does not agree" in out and "M spunet  a → b" in out and "Source-Only spunet  a → b" not in out


def test_compare_tolerates_cross_cpu_noise_and_a_gap_carried_by_one_scene():
    cells, scenes = fake([BASE, row("M", quality=0.7, noise=0.05)], scenes=8)
    small = compare_frames(*_shift(cells, scenes, "M", SINGLE_SEED_TOL * 0.8), cells, scenes)
    assert set(small["verdict"]) == {"agree"}
    # one scene made perfect (mIoU 1; the per-scene mIoU is bounded by 1 now that it comes from the confusion
    # matrices, so the row starts low: quality 0.3)
    cells, scenes = fake([BASE, row("M", quality=0.3, noise=0.05)], scenes=6)
    one = compare_frames(*_shift(cells, scenes, "M", 1.0, only_scene="test_0003"), cells, scenes)
    m = one[one["label"] == "M"]
    assert (m["delta"].abs() > SINGLE_SEED_TOL).all() and set(m["verdict"]) == {"agree"}
    # without per-scene rows the tolerance alone decides
    run_cells = _shift(cells, scenes, "M", 1.0, only_scene="test_0003")[0]
    no_scenes = compare_frames(run_cells, scenes.iloc[0:0], cells, scenes.iloc[0:0])
    assert set(no_scenes[no_scenes["label"] == "M"]["verdict"]) == {"differs"}


def test_compare_uses_the_reference_seed_spread():
    q = lambda s, t, seed: 0.6 + 0.03 * (seed - 1)  # noqa: E731 - a seed spread of about 3 points of accuracy
    ref_cells, ref_scenes = fake([BASE, row("M", quality=q, noise=0.02)], seeds=(0, 1, 2), scenes=8)
    near = compare_frames(*_shift(ref_cells, ref_scenes, "M", 0.02), ref_cells, ref_scenes)
    assert set(near["verdict"]) == {"agree"}
    assert (near.loc[near["label"] == "M", "tol"] > 0.02).all()
    far = compare_frames(*_shift(ref_cells, ref_scenes, "M", 0.15), ref_cells, ref_scenes)
    assert set(far.loc[far["label"] == "M", "verdict"]) == {"differs"}


def test_compare_reports_errors_and_missing_rows():
    cells, scenes = fake([BASE, row("M", quality=0.7), row("Gone", quality=0.4)], scenes=6)
    run = cells[cells["label"] != "Gone"].copy()
    run.loc[run.index[-1], "status"] = "error"
    res = compare_frames(run, scenes, cells, scenes)
    assert (res[res["label"] == "Gone"]["verdict"] == "not run").all()
    assert (res["verdict"] == "error").sum() == 1


def test_default_reference_prefers_results_reference_and_never_the_run_itself(tmp_path, monkeypatch):
    cells, scenes = fake([BASE], scenes=4)
    monkeypatch.chdir(tmp_path)
    old = _write(tmp_path / "results" / "grid1", cells, scenes, "grid1")
    run = _write(tmp_path / "runs" / "grid1", cells, scenes, "grid1")
    assert default_reference(run).resolve() == old.resolve()
    new = _write(tmp_path / "results" / "reference" / "grid1", cells, scenes, "grid1")
    assert default_reference(run).resolve() == new.resolve()
    assert default_reference(new).resolve() == old.resolve()  # never the run itself
    other = _write(tmp_path / "runs" / "grid2", cells, scenes, "grid2")
    (other / "env.json").unlink()
    (other / "config.toml").write_text('name = "grid2"\n')
    with pytest.raises(BenchError, match="grid2"):
        default_reference(other)


def test_compare_without_common_rows_is_an_error(tmp_path):
    a, sa = fake([BASE], pairs=(("a", "b"),))
    b, sb = fake([BASE], pairs=(("x", "y"),))
    with pytest.raises(BenchError, match="nothing|no \\(method, pair\\) in common"):
        compare(_write(tmp_path / "a", a, sa), _write(tmp_path / "b", b, sb), Console(record=True))


# ------------------------------------------------------------------------------------ protocol v3
BN = row("BN-Adapt", "bn_adapt", 0.6, adapt_s=0.01)


def test_a_row_made_inert_on_purpose_is_named_in_every_table_and_not_ranked(tmp_path):
    """"Stuck" predicts exactly what BN-Adapt predicts (SAR at lr 1e-4 in id_ood): no effect at these settings;
    "Working" moves by a few points and is ranked as before."""
    rows = [BASE, BN, row("Stuck", "sar", 0.6, adapt_s=0.02), row("Working", "tent", 0.55, noise=0.01)]
    res = results(rows, seeds=(0, 1), scenes=10)
    assert res.inert == {"Stuck"} and res.inert_detail["Stuck"] == ("BN-Adapt", "equivalent")
    assert "Stuck" not in res.ranked() and "Working" in res.ranked()
    cs = column_stats(res, n_boot=50)
    main = main_table(res, cs)
    name = "Stuck (no effect at these settings)"
    i = [r[0] for r in main.rows].index(name)
    assert main.rows[i][-1] == "-" and not any((i, j) in main.bold for j in range(len(main.header)))
    bn = [r[0] for r in main.rows].index("BN-Adapt")
    assert {(bn, 1), (bn, 2)} <= main.bold  # it ties the best row, but only BN-Adapt is bold
    assert "Stuck (as BN-Adapt: equivalent)" in main.caption
    folder = tmp_path / "run"
    _write(folder, *fake(rows, seeds=(0, 1), scenes=10))
    make_report(folder)
    for t in ("table_main", "table_cost", "table_stats"):
        assert name in (folder / "report" / f"{t}.md").read_text(), t
    matched = (folder / "report" / "table_cost_matched.md").read_text()
    assert "Stuck" not in matched.split("\n\n")[0] and "Working" in matched  # not ranked in a band either


def test_an_adaptation_that_changes_nothing_is_named_against_its_own_model():
    """TTT-MAE adapting the joint-mae model without changing a prediction (n_same_source = every scored
    point) is inert "as its un-adapted model (recipe joint-mae)", though its mIoU is far below
    Source-Only's (the recipe's loss, not the adaptation's); a row that moves its predictions is not, and
    neither is a model that never adapts (Joint-Train, equal to Source-Only here): it has no settings."""
    rows = [BASE, BN, row("MAE", "ttt_mae", 0.4, recipe="joint-mae", noise=0.01),
            row("Moves", "tent", 0.45, noise=0.01), row("Joint-Train", "source", 0.5, recipe="joint-kd")]
    cells, scenes = fake(rows, seeds=(0, 1), scenes=10)
    scored = scenes["conf"].map(lambda c: float(np.sum(c)))
    mae = scenes["cell_id"].str.startswith("MAE|") | scenes["cell_id"].str.startswith("Joint-Train|")
    scenes["n_same_source"] = np.where(mae, scored, np.floor(0.5 * scored))
    res = Results.from_frames(cells, scenes)
    assert res.inert == {"MAE"}  # Joint-Train predicts as its model too, but it adapts nothing: not named
    assert res.inert_detail["MAE"] == ("its un-adapted model (recipe joint-mae)", "identical predictions")
    assert "MAE (as its un-adapted model (recipe joint-mae): identical predictions)" in \
        main_table(res, column_stats(res, n_boot=50)).caption


def test_change_against_bn_adapt_beside_the_change_against_source_only():
    rows = [BASE, BN, row("Beyond", "ttt_kd", lambda s, t, seed: 0.65), row("Same", "tent", 0.6, noise=0.002)]
    res = results(rows, seeds=(0, 1), scenes=10)
    main = main_table(res, column_stats(res, n_boot=50))
    line = {r[0]: r for r in main.rows}
    d_so, d_bn = res.delta("Beyond", ("a", "b")), res.delta("Beyond", ("a", "b"), "bn")
    assert d_bn > 0.03 and f"({100 * d_so:+.1f}*, BN {100 * d_bn:+.1f}*)" in line["Beyond"][1]
    assert "BN " in line["Same"][1] and "BN +0.0*" not in line["Same"][1] and "BN -0.0*" not in line["Same"][1]
    assert "BN" not in line["Source-Only"][1] and "BN" not in line["BN-Adapt"][1]  # BN-Adapt's own change is vs SO
    assert "against BN-Adapt" in main.caption
    no_bn = results([BASE, row("M", quality=0.6)])
    assert "No BN-Adapt row" in main_table(no_bn, column_stats(no_bn, n_boot=50)).caption


def _model_effect(s, t, seed):
    return 0.6 + {0: 0.05, 1: 0.05, 2: -0.03}[seed]


@pytest.mark.parametrize("v3", [False, True])
def test_a_gain_in_two_of_three_models_does_not_split_the_bold_group(v3):
    """Old rows: seed = model seed, shared scenes (crossed); v3 rows: three model seeds, each with its own
    scenes (nested). Either way the three models are the independent units: A is not significantly above B."""
    cells, scenes = fake([row("A", "tent", _model_effect, noise=0.003), row("B", "eata", 0.6, noise=0.003)],
                         pairs=(("a", "b"),), seeds=(0, 1, 2), scenes=12, v3=v3)
    if v3:
        cells["model_seed"] = cells["seed"]
    res = Results.from_frames(cells, scenes)
    cs = column_stats(res, n_boot=50)
    assert cs.groups[("a", "b")].members == {"A", "B"}
    want = "3 model seeds resampled" + ("" if v3 else "; scenes shared by several streams drawn once")
    assert cs.designs[("a", "b")].startswith(want)
    # the same rows with one model (v3, model seed 0): the 36 scenes are the units and A is above B
    one, sc1 = fake([row("A", "tent", _model_effect, noise=0.003), row("B", "eata", 0.6, noise=0.003)],
                    pairs=(("a", "b"),), seeds=(0, 1, 2), scenes=12, v3=True)
    cs1 = column_stats(Results.from_frames(one, sc1), n_boot=50)
    assert cs1.groups[("a", "b")].members == {"A"} and cs1.designs[("a", "b")].startswith("one model")


def _cells_scenes(spec: dict[str, list[list[int]]], pair=("a", "b")):
    """Cells and scenes of one seed from explicit per-scene confusion matrices (flattened) per row label."""
    cells, scenes = [], []
    for k, (label, confs) in enumerate(spec.items()):
        method = "source" if label == "Source-Only" else f"m{k}"
        cid = f"{label}|{pair}"
        total = np.sum([np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES) for c in confs], 0)
        cells.append(dict(cell_id=cid, status="ok", miou=0.0, eval_classes="wall,floor,sofa,bed", method=method,
                          label=label, params="{}", recipe="source", train_on="source", teacher="", backbone="spunet",
                          source=pair[0], target=pair[1], seed=0, n_test=len(confs), adapt_s_per_scene=0.1,
                          infer_s_per_scene=0.1, recorded_miou_old_rule=miou_old(total)))
        for i, c in enumerate(confs):
            scenes.append(dict(cell_id=cid, scene=f"s{i}", index=i, conf=list(c),
                               miou=miou_old(np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES))))
    cells = pd.DataFrame(cells)
    cells["miou"] = cells["recorded_miou_old_rule"]
    return with_roles(cells), pd.DataFrame(scenes)


def miou_old(conf: np.ndarray) -> float:
    """The rule before issue 27: a class in the prediction but not in the truth scored 0."""
    tp = np.diag(conf).astype(float)
    denom = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    return float(np.nanmean(iou))


def test_pooled_and_per_scene_orders_that_disagree_are_marked():
    big, small = 10_000, 100
    spec = {"A": [_conf(0.9, big)] + [_conf(0.5, small)] * 3, "B": [_conf(0.8, big)] + [_conf(0.6, small)] * 3}
    res = Results.from_frames(*_cells_scenes(spec))
    cs = column_stats(res, n_boot=50)
    assert cs.mean[("A", ("a", "b"))] > cs.mean[("B", ("a", "b"))]
    assert cs.per_scene[("A", ("a", "b"))] < cs.per_scene[("B", ("a", "b"))]
    assert cs.disagree[("a", "b")] == [("A", "B")]
    main = main_table(res, cs)
    assert all(r[1].endswith(" ‡") for r in main.rows)
    assert "‡ A > B: A has the higher mIoU, B the higher mean per-scene mIoU. a→b: A > B." in main.caption
    assert "$^\\ddagger$" in main.to_latex()
    agree = {"A": [_conf(0.9, big)] + [_conf(0.7, small)] * 3, "B": [_conf(0.8, big)] + [_conf(0.6, small)] * 3}
    cs2 = column_stats(Results.from_frames(*_cells_scenes(agree)), n_boot=50)
    assert cs2.disagree[("a", "b")] == [] and "‡" not in main_table(Results.from_frames(*_cells_scenes(agree)),
                                                                   cs2).caption


def _with_strays(q: float, stray: int) -> list[int]:
    """wall and floor (n = 1000 each, q right); ``stray`` wall points predicted as sofa and as bed, classes
    the target does not have."""
    c = np.asarray(_conf(q, 1000)).reshape(NUM_CLASSES, NUM_CLASSES)
    c[0, 0] -= 2 * stray
    c[0, 5] += stray  # sofa
    c[0, 6] += stray  # bed
    return c.reshape(-1).tolist()


def test_a_class_the_target_lacks_is_not_scored_and_structure_object_columns(tmp_path):
    spec = {"Source-Only": [_with_strays(0.7, 3)] * 4, "TENT": [_with_strays(0.8, 2)] * 4}
    cells, scenes = _cells_scenes(spec)
    res = Results.from_frames(cells, scenes)
    for label, q, stray in (("Source-Only", 0.7, 3), ("TENT", 0.8, 2)):
        c = res.cells[res.cells["row"] == label].iloc[0]
        total = 4 * np.asarray(_with_strays(q, stray)).reshape(NUM_CLASSES, NUM_CLASSES)
        iou = [total[k, k] / (total[k].sum() + total[:, k].sum() - total[k, k]) for k in (0, 1)]
        assert c["miou"] == pytest.approx(np.mean(iou))  # sofa and bed are not scored
        assert c["miou_recorded"] == pytest.approx(np.mean(iou) / 2)  # the old rule: two zeros in the mean
        assert c["miou_structure"] == pytest.approx(np.mean(iou)) and np.isnan(c["miou_object"])
    main = main_table(res, column_stats(res, n_boot=50))
    assert main.header[-4:] == ["structure", "object", "ECE", "mean rank [95% CI]"]
    tent = next(r for r in main.rows if r[0] == "TENT")
    assert tent[1].startswith(pct(res.cells.loc[res.cells["row"] == "TENT", "miou"].iloc[0]))
    assert tent[-4] == pct(res.cells.loc[res.cells["row"] == "TENT", "miou_structure"].iloc[0]) and tent[-3] == "-"


def test_structure_and_object_mean_over_pairs():
    c = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    c[0, 0], c[0, 3] = 80, 20  # wall: 80 right, 20 taken for chair
    c[3, 3] = 60  # chair
    c[2, 2] = 50  # ceiling
    res = Results.from_frames(*_cells_scenes({"M": [c.reshape(-1).tolist()]}))
    m = res.cells.iloc[0]
    assert m["miou_structure"] == pytest.approx((80 / 100 + 1.0) / 2) and m["miou_object"] == pytest.approx(60 / 80)


def test_ece_column_and_reliability_figure(tmp_path):
    rows = [row("Source-Only", "source", 0.5, adapt_s=0.0, confidence=0.9), row("M", quality=0.7, confidence=0.72)]
    res = results(rows)
    main = main_table(res, column_stats(res, n_boot=50))
    line = {r[0]: r for r in main.rows}
    assert line["Source-Only"][-2] == pct(0.4) and line["M"][-2] == pct(0.02)  # |confidence - accuracy|
    names = {p.name for p in figures(res, tmp_path)}
    assert {"fig_reliability.png", "fig_reliability.svg"} <= names
    no_hist = results([BASE, row("M")])
    assert reliability_table(no_hist).empty and main_table(no_hist, column_stats(no_hist, n_boot=50)).rows[0][-2] == "-"


def test_compare_scores_an_old_reference_and_a_new_run_by_one_rule():
    """The reference recorded mIoU with stray predictions of absent classes scored 0 (before issue 27); a
    run of the same code after it records the new rule's value. Scored by one rule they agree."""
    spec = {"Source-Only": [_with_strays(0.7, 3)] * 6, "TENT": [_with_strays(0.8, 2)] * 6}
    ref_cells, ref_scenes = _cells_scenes(spec)
    run_cells, run_scenes = _cells_scenes(spec)
    rescored, _ = rescore.rescore(run_cells, run_scenes, CLASSES)
    run_cells["miou"] = rescored["miou"]
    run_scenes["miou"] = [miou(np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES)) for c in run_scenes["conf"]]
    assert (run_cells["miou"] - ref_cells["miou"]).abs().min() > 2 * SINGLE_SEED_TOL
    out = compare_frames(run_cells, run_scenes, ref_cells, ref_scenes)
    assert set(out["verdict"]) == {"agree"} and np.allclose(out["delta"], 0)


def test_stream_position_lines_are_told_apart():
    """Every row of the stream-position figure has its own colour and dash (rows shared colours before:
    Joint-Train/AdaContrast, BN-Adapt/TTT-KD, TTT-KD-O/Oracle), and its own marker among ten."""
    from bench.report.figures import stream_styles

    rows = [f"m{i}" for i in range(25)] + ["Source-Only", "Oracle", "Joint-Train", "Joint-Train 2D"]
    roles = {r: "method" for r in rows} | {"Source-Only": "baseline", "Oracle": "control", "Joint-Train": "control",
                                           "Joint-Train 2D": "control"}
    styles = stream_styles(rows, roles)
    pairs = [(s["color"], s["ls"]) for s in styles.values()]
    assert len(set(pairs)) == len(rows)
    assert all(styles[r]["color"] != "C7" for r in rows)  # tab10's grey is the controls'
    assert len({styles[r]["marker"] for r in rows[:10]}) == 10
