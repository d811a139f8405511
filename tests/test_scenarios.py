"""Scenarios: stream protocols (order, periodic reset, forgetting probe), their grids and figures.

Tiny datasets registered here (``scn-a``/``scn-b``/``scn-c``): planes of floor/wall plus one object
class per scene (chosen from the scene's name), so every scene has a dominant object class.
"""

import importlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from toy_datasets import PlaneDataset, register

from bench.data.classes import CLASS_ID, NUM_CLASSES
from bench.errors import BenchError
from bench.grid import load_grid
from bench.metrics import miou
from bench.runner import run_grid
from bench.spec import Cell, StreamProtocol, order_stream, scene_order_key

OBJECTS = ("chair", "table", "sofa", "bed")


register({"scn-a": 0.0, "scn-b": 0.1, "scn-c": 0.2}, OBJECTS, "scenario test dataset")


HEAD = """
name = "scn"
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
train_scenes = 2
val_scenes = 0
test_scenes = 3
train = { epochs = 1 }
"""


def grid(tmp_path, text: str, name: str = "scn"):
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return load_grid(str(p))


STREAMS = HEAD + """
[[streams]]
source = "scn-a"
target = [{ dataset = "scn-b", scenes = 3 }, { dataset = "scn-c", scenes = 3 }]
[[streams]]
source = "scn-a"
target = [{ dataset = "scn-b", scenes = 3 }, { dataset = "scn-c", scenes = 3 }]
order = "shuffled"
order_seed = 4
[[streams]]
source = "scn-a"
target = "scn-b"
order = "by_class"
probe_every = 2
probe_scenes = 1
[[methods]]
name = "source"
[[methods]]
name = "tent"
reset_every = [0, 2]
"""


# ------------------------------------------------------------------------------ parse and validate
def test_stream_specs_parse_round_trip_and_enter_the_cell_id(tmp_path):
    g = grid(tmp_path, STREAMS)
    assert len(g.cells) == 3 * 3
    by = {(c.label, c.target, c.protocol.reset_every): c for c in g.cells}
    seq = by[("source", "scn-b>scn-c", 0)]
    mixed = by[("source", "scn-b+scn-c [shuffled]", 0)]
    corr = by[("tent", "scn-b [by_class probe/2]", 2)]
    assert seq.protocol == StreamProtocol()
    assert mixed.protocol == StreamProtocol(order="shuffled", order_seed=4)
    assert corr.protocol == StreamProtocol(order="by_class", reset_every=2, probe_every=2, probe_scenes=1)
    assert corr.test_scenes == 3  # a stream given as one spec takes the grid's test_scenes
    for c in g.cells:  # what pools and Ray carry gives back the same cell
        back = Cell.from_dict(json.loads(json.dumps(c.to_dict())))
        assert back.cell_id == c.cell_id and back.protocol == c.protocol and back.target == c.target
    # every option changes the id; options at their default do not (older grids keep their ids)
    assert len({c.cell_id for c in g.cells}) == len(g.cells)
    plain = seq.to_dict()
    assert Cell.from_dict({**plain, "order": "shuffled"}).cell_id != seq.cell_id
    g2 = grid(tmp_path, STREAMS.replace("order_seed = 4", "order_seed = 5"), "scn2")
    assert {c.cell_id for c in g2.cells} - {c.cell_id for c in g.cells}
    g3 = grid(tmp_path, HEAD + '''streams = [{ source = "scn-a", target = "scn-b", order = "sequential" }]
[[methods]]
name = "source"
''', "scn3")
    g4 = grid(tmp_path, HEAD + 'pairs = ["scn-a->scn-b"]\n[[methods]]\nname = "source"\n', "scn4")
    assert g3.cells[0].cell_id == g4.cells[0].cell_id


@pytest.mark.parametrize("edit, message", [
    ('order = "shuffled"\norder_seed = 4', 'order = "random"'),
    ('order = "shuffled"\norder_seed = 4', 'order = "by_class"\norder_seed = 4'),
    ("probe_every = 2\nprobe_scenes = 1", "probe_scenes = 3"),
    ("probe_every = 2\nprobe_scenes = 1", "probe_every = -1"),
    ("probe_every = 2\nprobe_scenes = 1", "probe_every = 2\nprobe_scenes = 0"),
    ("probe_every = 2\nprobe_scenes = 1", "probe = 2"),
    ("reset_every = [0, 2]", "reset_every = -3"),
])
def test_bad_stream_options_are_named(tmp_path, edit, message):
    with pytest.raises(BenchError) as e:
        grid(tmp_path, STREAMS.replace(edit, message))
    text = str(e.value)
    key = message.split("\n")[-1].split(" =")[0]
    assert str(tmp_path / "scn.toml") in text and key in text
    if key == "order":
        assert "sequential" in text or "only applies" in text


def test_segments_with_start_read_disjoint_scenes(tmp_path):
    text = HEAD + """streams = [{ source = "scn-a", target = [{ dataset = "scn-b", scenes = 2 },
                                               { dataset = "scn-b", scenes = 2, start = 2 }] }]
[[methods]]
name = "source"
"""
    c = grid(tmp_path, text).cells[0]
    from bench.resources import stream_names

    assert [n for _, _, n in stream_names(c)] == [["test_0", "test_1"], ["test_2", "test_3"]]
    with pytest.raises(BenchError, match="segments 1 and 2 both read scenes of scn-b.*start = 2"):
        grid(tmp_path, text.replace("start = 2", "start = 1"), "overlap")


def test_top_level_reset_every(tmp_path):
    g = grid(tmp_path, HEAD + 'reset_every = 5\npairs = ["scn-a->scn-b"]\n[[methods]]\nname = "tent"\n')
    assert g.cells[0].protocol.reset_every == 5
    with pytest.raises(BenchError, match="reset_every"):
        grid(tmp_path, HEAD + 'reset_every = "x"\npairs = ["scn-a->scn-b"]\n[[methods]]\nname = "tent"\n', "bad")


# ------------------------------------------------------------------------------------- ordering
def test_order_stream_shuffle_is_seeded_and_by_class_sorts():
    items = [(k, f"test_{i}") for k in range(3) for i in range(10)]
    a, b, c = (order_stream(items, "shuffled", s) for s in (1, 1, 2))
    assert a == b and a != c and sorted(a) == sorted(items) and a != items
    assert order_stream(items, "sequential") == items
    keyed = order_stream(items, "by_class", key=lambda it: -int(it[1].split("_")[1]))
    # sorted by the key, ties kept in stream order (stable)
    assert keyed == [(k, f"test_{i}") for i in range(9, -1, -1) for k in range(3)]
    with pytest.raises(BenchError, match="key"):
        order_stream(items, "by_class")


def test_scene_order_key_prefers_objects_and_room_type():
    s = PlaneDataset("scn-a", 0, OBJECTS).load("test_0")
    dominant, room = scene_order_key(s)
    objs = s.label[~np.isin(s.label, [CLASS_ID["wall"], CLASS_ID["floor"]])]
    assert dominant == int(np.bincount(objs).argmax()) and room == ""
    s.room_type = "office"
    assert scene_order_key(s) == (dominant, "office")
    s.label[:] = CLASS_ID["floor"]
    assert scene_order_key(s)[0] == CLASS_ID["floor"]


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory):
    """One tiny run of every scenario (source and TENT, with and without periodic reset)."""
    tmp = tmp_path_factory.mktemp("scenarios")
    g = grid(tmp, STREAMS)
    run_grid(g, tmp / "out")
    cells = pd.read_parquet(tmp / "out" / "cells.parquet")
    scenes = pd.read_parquet(tmp / "out" / "scenes.parquet")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    return g, cells, scenes, tmp / "out"


def _rows(cells, scenes, label, target, reset_every=0):
    cid = cells[(cells["label"] == label) & (cells["target"] == target)
                & (cells["reset_every"] == reset_every)]["cell_id"]
    assert len(cid) == 1
    return cells.set_index("cell_id").loc[cid.iloc[0]], scenes[scenes["cell_id"] == cid.iloc[0]].sort_values(
        ["probe", "index"])


def test_mixed_is_a_seeded_shuffle_of_the_right_scenes(stream_run):
    g, cells, scenes, _ = stream_run
    _, seq = _rows(cells, scenes, "source", "scn-b>scn-c")
    _, mix = _rows(cells, scenes, "source", "scn-b+scn-c [shuffled]")
    seq_items = list(zip(seq["segment"], seq["scene"]))
    mix_items = list(zip(mix["segment"], mix["scene"]))
    # in a stream of several segments a row's scene is prefixed by its segment's dataset (unique per cell)
    assert seq_items == [(0, f"scn-b/test_{i}") for i in range(3)] + [(1, f"scn-c/test_{i}") for i in range(3)]
    assert sorted(mix_items) == sorted(seq_items) and mix_items != seq_items
    assert mix_items == order_stream(seq_items, "shuffled", 4)
    assert mix["index"].tolist() == list(range(6))
    # the same scene scores the same whichever its position, for a method without state
    m = seq.merge(mix, on=["segment", "scene"], suffixes=("", "_mix"))
    assert np.allclose(m["miou"], m["miou_mix"])


def test_correlated_order_is_monotone_in_its_key(stream_run):
    g, cells, scenes, _ = stream_run
    _, corr = _rows(cells, scenes, "source", "scn-b [by_class probe/2]")
    corr = corr[~corr["probe"]]
    ds = PlaneDataset("scn-b", 0.1, OBJECTS)
    keys = [scene_order_key(ds.load(n)) for n in corr["scene"]]
    assert keys == sorted(keys) and sorted(corr["scene"]) == ["test_0", "test_1", "test_2"]


def test_reset_every_restores_the_source_parameters(tmp_path, monkeypatch):
    from methods.tent import Tent

    seen = []
    adapt = Tent.adapt

    def recording(self, inp):
        seen.append((inp.index, [p.detach().clone() for p in self.params]))
        return adapt(self, inp)

    monkeypatch.setattr(Tent, "adapt", recording)
    g = grid(tmp_path, HEAD + '''streams = [{ source = "scn-a", target = [{ dataset = "scn-b", scenes = 5 }] }]
[[methods]]
name = "tent"
reset_every = 2
lr = 0.01
''')
    run_grid(g, tmp_path / "out")
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    scenes = pd.read_parquet(tmp_path / "out" / "scenes.parquet").sort_values("index")
    assert cells["status"].tolist() == ["ok"] and cells["n_resets"].tolist() == [2]
    assert scenes["reset"].tolist() == [False, False, True, False, True]
    source = seen[0][1]
    for index, params in seen:
        same = all(torch.equal(a, b) for a, b in zip(params, source))
        assert same == (index % 2 == 0), index  # reset before scenes 2 and 4; adapted state before 1 and 3


def test_probe_rows_are_outside_the_main_miou(stream_run):
    g, cells, scenes, _ = stream_run
    cell, rows = _rows(cells, scenes, "tent", "scn-b [by_class probe/2]")
    probe, main = rows[rows["probe"]], rows[~rows["probe"]]
    assert len(main) == 3 and main["index"].tolist() == [0, 1, 2]
    # probes before scene 0 and 2 and after the stream, one clean source val scene each
    assert probe["index"].tolist() == [0, 2, 3] and set(probe["split"]) == {"val"}
    assert set(probe["dataset"]) == {"scn-a"} and probe["scene"].tolist() == [f"probe@{i}/val_0" for i in (0, 2, 3)]
    classes = tuple(CLASS_ID[c] for c in cell["eval_classes"].split(","))
    conf = np.sum([np.asarray(c).reshape(NUM_CLASSES, NUM_CLASSES) for c in main["conf"]], 0)
    assert cell["miou"] == pytest.approx(miou(conf, classes))
    curve = json.loads(cell["probe_curve"])
    assert [p["position"] for p in curve] == [0, 2, 3]
    assert [p["miou"] for p in curve] == pytest.approx(probe["miou"].tolist())
    assert cell["forgetting"] == pytest.approx(curve[0]["miou"] - curve[-1]["miou"])
    # the probe does not change the stream: the same cell without a probe gives the same scene rows
    # (TENT is online, so a probe that adapted or kept BN statistics would show here)
    g2 = grid(g.path.parent, STREAMS.replace("probe_every = 2\nprobe_scenes = 1\n", ""), "noprobe")
    nop = [c for c in g2.cells if c.label == "tent" and c.protocol.reset_every == 2 and "by_class" in c.target]
    from bench.cell import run_cell

    row, srows = run_cell(nop[0])
    assert row["status"] == "ok" and np.isnan(row["forgetting"])
    assert [r["miou"] for r in srows] == pytest.approx(main["miou"].tolist())


def test_figures_render_from_a_tiny_run(stream_run, monkeypatch):
    F = importlib.import_module("bench.report.figures")
    from bench.report import make_report

    _, cells, _, out = stream_run
    monkeypatch.setattr(F, "MIN_STREAM", 3)
    written = {p.name for p in make_report(out)}
    assert {"fig_stream_position.png", "fig_forgetting.png"} <= written
    segs = [n for n in written if n.startswith("fig_segments_") and n.endswith(".png")]
    assert len(segs) == 2  # the sequential and the mixed two-segment streams
    res = F.Results.from_frames(cells, pd.read_parquet(out / "scenes.parquet"), out)
    t = F.segment_table(res)
    seq = t.loc["scn-a → scn-b>scn-c"]
    assert list(seq.columns[-1:]) == ["overall"] and seq.notna().all().all()
    src = cells[(cells["label"] == "source") & (cells["target"] == "scn-b>scn-c")].iloc[0]
    seg = {s["dataset"]: s["miou"] for s in json.loads(src["segments"])}
    assert seq.loc["source", "1: scn-b"] == pytest.approx(seg["scn-b"])


def test_report_without_scenario_columns_draws_none(tmp_path):
    F = importlib.import_module("bench.report.figures")

    cells = pd.DataFrame({"cell_id": ["a", "b"], "status": "ok", "method": ["source", "tent"],
                          "label": ["Source-Only", "TENT"], "source": "x", "target": "y", "seed": 0, "miou": [0.3, 0.4],
                          "recipe": "source", "train_on": "source", "params": "{}", "teacher": "", "backbone": "b",
                          "adapt_s_per_scene": [0.0, 0.1], "infer_s_per_scene": 0.1})
    res = F.Results.from_frames(cells, pd.DataFrame(), tmp_path)
    names = {e.name for e in F.FIGURES if e.applies(res)}
    assert not names & {"mIoU against stream position", "forgetting curve", "per-segment mIoU"}
