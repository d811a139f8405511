"""Scenario grids of issue 30 (recurring domains, constant difficulty, shift plus corruption): their
stream labels, that they reuse the shipped models, and the report's per-visit and shift-plus-corruption
tables and figure, on tiny registered datasets (``brd-a``/``brd-b``/``brd-c``)."""

import json

import numpy as np
import pandas as pd
import pytest
from toy_datasets import register

from bench.grid import load_grid
from bench.runner import run_grid
from bench.spec import stream_period, visits

BRD_OBJECTS = ("table", "chair")  # a chair or a table per scene
register({"brd-a": 0.0, "brd-b": 0.1, "brd-c": 0.2}, BRD_OBJECTS, "issue-30 scenario test dataset")

HEAD = """
name = "brd"
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
train_scenes = 2
val_scenes = 0
train = { epochs = 1 }
selected = "none"
seeds = [0, 1]
"""

RECURRING = HEAD + """
[[streams]]
source = "brd-a"
target = [{ dataset = "brd-b", scenes = 2 }, { dataset = "brd-c", scenes = 2 },
          { dataset = "brd-b", scenes = 2, start = 2 }, { dataset = "brd-c", scenes = 2, start = 2 }]
[[streams]]
source = "brd-a"
target = [{ dataset = "brd-b", scenes = 2 }, { dataset = "brd-b", scenes = 2, start = 2 },
          { dataset = "brd-b", scenes = 2, start = 4 }]
[[methods]]
name = "source"
label = "Source-Only"
[[methods]]
name = "tent"
label = "TENT"
lr = 0.01
"""


def test_stream_period_and_visits():
    assert stream_period(["a", "b", "c", "a", "b", "c"]) == 3
    assert stream_period(["a", "a", "a"]) == 1
    assert stream_period(["a", "b", "a"]) == 3  # not a whole number of cycles: nothing repeats
    assert stream_period(["a", "b", "c"]) == 3
    assert visits(["a", "b", "a", "c", "a"]) == [1, 1, 2, 1, 3]


@pytest.fixture(scope="module")
def recurring_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recurring")
    p = tmp / "brd.toml"
    p.write_text(RECURRING)
    g = load_grid(str(p))
    run_grid(g, tmp / "out")
    cells = pd.read_parquet(tmp / "out" / "cells.parquet")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    return g, cells, tmp / "out"


def test_recurring_and_constant_targets_are_labelled_by_their_cycle(recurring_run):
    g, cells, _ = recurring_run
    assert set(cells["target"]) == {"(brd-b>brd-c) x2", "brd-b x3"}


def test_visit_table_reads_the_segments_per_visit(recurring_run):
    from bench.report.frame import load
    from bench.report.scenarios import table_visits, visit_table

    _, cells, out = recurring_run
    res = load(out)
    t = visit_table(res)
    rec = t[t["stream"] == "brd-a → (brd-b>brd-c) x2"]
    assert set(zip(rec["dataset"], rec["visit"])) == {("brd-b", 1), ("brd-c", 1), ("brd-b", 2), ("brd-c", 2)}
    assert set(t[t["stream"] == "brd-a → brd-b x3"]["visit"]) == {1, 2, 3}
    tent = cells[(cells["label"] == "TENT") & (cells["target"] == "(brd-b>brd-c) x2")]
    want = np.mean([json.loads(s)[2]["miou"] for s in tent["segments"]])  # segment 3 = brd-b, visit 2
    tent_rec = rec[rec["row"].str.startswith("TENT")]
    got = tent_rec[(tent_rec["dataset"] == "brd-b") & (tent_rec["visit"] == 2)]["miou"].item()
    assert got == pytest.approx(want)
    assert (rec["seeds"] == 2).all()
    table = table_visits(res)
    md = table.to_markdown()
    assert "visit 3" in table.header and "last − first" in table.header
    line = next(r for r in table.rows if r[0] == "brd-a → (brd-b>brd-c) x2" and r[1].startswith("TENT")
                and r[2] == "brd-b")
    v1 = tent_rec[(tent_rec["dataset"] == "brd-b") & (tent_rec["visit"] == 1)]["miou"].item()
    assert line[-1] == f"{100 * (got - v1):+.1f}" and line[-2] == "-"  # no third visit of brd-b
    assert "brd-a → brd-b x3" in md


def test_report_writes_the_visit_table_and_figures(recurring_run):
    from bench.report import make_report

    _, _, out = recurring_run
    written = {p.name for p in make_report(out)}
    assert {"table_visits.md", "table_visits.tex"} <= written
    figs = sorted(n for n in written if n.startswith("fig_visits_") and n.endswith(".png"))
    assert len(figs) == 2


def test_no_visit_table_without_revisits():
    from bench.report.frame import Results
    from bench.report.scenarios import table_visits

    segs = json.dumps([{"segment": 0, "dataset": "x", "miou": 0.5}, {"segment": 1, "dataset": "y", "miou": 0.4}])
    cells = pd.DataFrame({"cell_id": ["a"], "status": "ok", "method": "source", "label": "Source-Only", "source": "s",
                          "target": "x>y", "seed": 0, "miou": 0.45, "params": "{}", "segments": segs, "n_segments": 2})
    assert table_visits(Results.from_frames(cells)) is None


def _cell(cid, label, method, target, miou, seed=0):
    return {"cell_id": cid, "status": "ok", "method": method, "label": label, "source": "synth-scannet",
            "target": target, "seed": seed, "miou": miou, "params": "{}", "recipe": "source", "train_on": "source",
            "teacher": "", "backbone": "spunet", "adapt_s_per_scene": 0.1, "infer_s_per_scene": 0.1}


def test_shift_corruption_table_interaction():
    from bench.report.frame import Results
    from bench.report.scenarios import shift_corruption_cols, shift_corruption_table

    vals = {"synth-scannet": 0.70, "synth-s3dis": 0.50, "synth-scannet:jitter@3": 0.60, "synth-s3dis:jitter@3": 0.30,
            "synth-matterport": 0.45}  # matterport has no corrupted pair: no quadruple of its own
    rows = [_cell(f"s{i}{s}", "Source-Only", "source", t, v + 0.02 * s) for i, (t, v) in enumerate(vals.items())
            for s in (0, 1)]
    res = Results.from_frames(pd.DataFrame(rows))
    assert shift_corruption_cols(res) == [{"clean": ("synth-scannet", "synth-scannet"),
                                           "shift": ("synth-scannet", "synth-s3dis"),
                                           "corruption": ("synth-scannet", "synth-scannet:jitter@3"),
                                           "both": ("synth-scannet", "synth-s3dis:jitter@3")}]
    t = shift_corruption_table(res)
    (line,) = t.rows
    # seeds add 0.01 to every mean: 0.31 - (0.51 + 0.61 - 0.71) = -0.10
    assert line[2:] == ["71.0", "51.0", "61.0", "31.0", "-10.0"]
    assert shift_corruption_table(Results.from_frames(pd.DataFrame(rows[:4]))) is None
    # a stream's column (recurring, continual) is not one dataset: it is no quadruple and no error
    stream = [_cell(f"r{s}", "Source-Only", "source", "(synth-s3dis>synth-scannet:color_shift@3) x3", 0.4, s)
              for s in (0, 1)]
    res = Results.from_frames(pd.DataFrame(rows + stream))
    assert len(shift_corruption_cols(res)) == 1 and shift_corruption_table(res) is not None
    assert shift_corruption_table(Results.from_frames(pd.DataFrame(stream))) is None


@pytest.mark.parametrize("name", ["recurring", "constant", "shift_corruption"])
def test_scenario_grids_reuse_the_shipped_models(name):
    """Every model of the scenario grids is a model of id_ood (the shipped models): no new model key."""
    shipped = {c.model_key() for c in load_grid("id_ood").all_cells}
    g = load_grid(name)
    assert g.all_cells and {c.model_key() for c in g.all_cells} <= shipped
    assert {c.seed for c in g.all_cells} == {0, 1, 2}
