"""Protocol v3 on the data side: two seed axes, disjoint test scenes per seed, one identity per
configuration (provenance recorded, never hashed), duplicates merged by construction, per-scene
calibration histograms and the ``scene_stats`` hook."""

import json
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.grid import load_grid
from bench.resources import stream_names
from bench.runner import preflight, run_grid, schedule
from bench.store import ResultsStore
from methods import METHODS
from methods.base import Method, MethodConfig


class Planes(Dataset):
    """Two labelled planes per scene, seeded by a stable hash of the scene name; no views. ``size``
    limits every split to that many scenes (as a real dataset's folder does); None = unlimited."""

    has_views = False

    def __init__(self, name: str, shift: float, size: int | None = None):
        self.name, self.classes, self.shift, self.size = name, (0, 1), shift, size

    def scene_names(self, split, count=None):
        self._check_split(split)
        if self.size is not None and count and count > self.size:
            raise BenchError(f"{self.name}: asked for {count} {split} scenes, it has {self.size}")
        return [f"{split}_{i}" for i in range(count or self.size or 2)]

    def load(self, name, with_views=True):
        rng = np.random.default_rng(zlib.crc32(f"{self.name}/{name}".encode()))
        n = 300
        coord = rng.uniform(0, 2, (n, 3)).astype(np.float32)
        label = (coord[:, 2] > 1).astype(np.int64)
        color = np.clip(np.where(label[:, None] == 1, 0.8, 0.2) + self.shift + rng.normal(0, 0.05, (n, 3)), 0, 1)
        normal = np.tile([0, 0, 1], (n, 1)).astype(np.float32)
        return Scene(name, self.name, coord, color.astype(np.float32), label, normal)

    def fingerprint(self):
        return {"dataset": self.name}


DATASETS.register("proto-a", description="test dataset")(lambda **kw: Planes("proto-a", 0.0))
DATASETS.register("proto-b", description="test dataset, shifted colours")(lambda **kw: Planes("proto-b", 0.15))
DATASETS.register("proto-small", description="test dataset with 5 scenes per split")(
    lambda **kw: Planes("proto-small", 0.1, size=5))


@dataclass
class CountingConfig(MethodConfig):
    pass


@METHODS.register("proto_counting", config=CountingConfig)
class Counting(Method):
    """test method: reports per-scene statistics through the scene_stats hook"""

    def adapt(self, inp):
        self.seen = inp.index
        return 0

    def scene_stats(self):
        return {"index": float(self.seen), "half": 0.5}


BACKBONE = 'backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]\n'
TRAIN = "train_scenes = 2\nval_scenes = 0\n"


def grid_file(tmp_path, body: str, name: str = "g") -> str:
    """A grid file: ``body`` (top-level keys, then method tables) with a tiny backbone (unless the body
    names its own) and 1 training epoch."""
    p = tmp_path / f"{name}.toml"
    head = f'name = "{name}"\n' + TRAIN + ("" if "backbones =" in body else BACKBONE)
    p.write_text(head + body + "\n[train]\nepochs = 1\n")
    return str(p)


# ------------------------------------------------------------------------------------- two seed axes
def test_seeds_share_one_model_and_model_seeds_train_more(tmp_path):
    body = 'pairs = ["proto-a->proto-b"]\nseeds = [0, 1, 2]\ntest_scenes = 2\n[[methods]]\nname = "source"\n' \
           '[[methods]]\nname = "bn_adapt"\n'
    cells = load_grid(grid_file(tmp_path, body)).cells
    assert len(cells) == 6 and {c.model_seed for c in cells} == {0}  # default: the shipped seed
    assert len({c.model_key() for c in cells}) == 1  # three test streams over one model
    assert all(c.model_identity()["seed"] == 0 for c in cells)
    assert len({c.cell_id for c in cells}) == 6
    two = load_grid(grid_file(tmp_path, body.replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\nmodel_seeds = [0, 1]"),
                              "g2")).cells
    assert len(two) == 12 and len({c.model_key() for c in two}) == 2
    by_model = {}
    for c in two:
        by_model.setdefault(c.model_key(), set()).add(c.model_seed)
    assert sorted(map(sorted, by_model.values())) == [[0], [1]]
    # the scheduler starts each model once, then the rest of its cells
    order = schedule(two)
    assert [c.model_seed for c in order[:2]] == [0, 1] and len({c.model_key() for c in order[2:]}) == 2
    with pytest.raises(BenchError, match=r"model_seeds = \[-1\] must be a non-empty list of whole numbers >= 0"):
        load_grid(grid_file(tmp_path, body.replace("seeds = [0, 1, 2]", "model_seeds = [-1]"), "bad"))


def test_rows_carry_seed_and_model_seed_and_seeds_read_their_own_scenes(tmp_path):
    body = 'pairs = ["proto-a->proto-b"]\nseeds = [0, 1]\nmodel_seeds = [0, 1]\ntest_scenes = 2\n' \
           '[[methods]]\nname = "source"\n'
    g = load_grid(grid_file(tmp_path, body))
    run_grid(g, tmp_path / "run")
    store = ResultsStore(tmp_path / "run")
    cells, scenes = store.cells(), store.scenes()
    assert set(cells["status"]) == {"ok"}
    assert sorted(zip(cells["seed"], cells["model_seed"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    sc = scenes.merge(cells[["cell_id", "seed", "model_seed"]], on="cell_id")
    by_seed = sc.groupby("seed")["scene"].apply(set).to_dict()
    assert by_seed == {0: {"test_0", "test_1"}, 1: {"test_2", "test_3"}}
    # the two model seeds are two models; the two seeds of one model seed adapt the same one
    train = cells.groupby("model_seed")["train_s"].nunique()
    assert (train == 1).all()


# --------------------------------------------------------------------------------- disjoint scenes
def _names(cell) -> list[str]:
    return [f"{ds.name}/{n}" if k >= 0 else f"probe:{ds.name}/{n}" for k, ds, names in stream_names(cell)
            for n in names]


def test_no_scene_is_in_two_seeds_of_a_stream(tmp_path):
    """One segment; several segments of one split with ``start`` (a gradual stream's way back); two
    datasets; the forgetting probe: every seed reads scenes of its own, seed 0 reads what is written."""
    body = """seeds = [0, 1, 2, 3]
test_scenes = 3
[[streams]]
source = "proto-a"
target = "proto-b"
[[streams]]
source = "proto-a"
target = [{ dataset = "proto-b:jitter@1", scenes = 2 }, { dataset = "proto-b:jitter@3", scenes = 2 },
          { dataset = "proto-b:jitter@1", scenes = 2, start = 2 }, { dataset = "proto-a", scenes = 1 }]
probe_every = 2
probe_scenes = 2
[[methods]]
name = "source"
"""
    cells = load_grid(grid_file(tmp_path, body)).cells
    for target in {c.target for c in cells}:
        # a scene is one scene whatever its corruption: compare base dataset and scene name
        per_seed = {c.seed: {re.sub(r":[a-z_]+@\d+", "", n) for n in _names(c)} for c in cells if c.target == target}
        assert len(per_seed) == 4
        for s, names in per_seed.items():
            for t, other in per_seed.items():
                assert s == t or not names & other, (target, s, t, sorted(names & other))
    one = next(c for c in cells if c.seed == 0 and c.target == "proto-b")
    assert _names(one) == ["proto-b/test_0", "proto-b/test_1", "proto-b/test_2"]  # seed 0: as written
    assert _names(next(c for c in cells if c.seed == 2 and c.target == "proto-b")) == \
        ["proto-b/test_6", "proto-b/test_7", "proto-b/test_8"]  # seed s: [s * n, (s + 1) * n)
    stream = next(c for c in cells if c.seed == 1 and c.target != "proto-b")
    # span of proto-b (test) is 4 (start 2 + 2 scenes): seed 1 reads 4..7; proto-a reads 1 scene per seed
    assert _names(stream) == ["proto-b:jitter@1/test_4", "proto-b:jitter@1/test_5", "proto-b:jitter@3/test_4",
                              "proto-b:jitter@3/test_5", "proto-b:jitter@1/test_6", "proto-b:jitter@1/test_7",
                              "proto-a/test_1", "probe:proto-a/val_2", "probe:proto-a/val_3"]


def test_a_dataset_with_too_few_scenes_for_disjoint_seeds_is_refused_before_work(tmp_path):
    body = 'pairs = ["proto-a->proto-small"]\nseeds = [0, 1, 2]\ntest_scenes = 2\n[[methods]]\nname = "source"\n'
    g = load_grid(grid_file(tmp_path, body))  # 5 test scenes: seeds 0 and 1 fit, seed 2 (scenes 4-5) does not
    with pytest.raises(BenchError, match=r"(?s)asked for 6 test scenes, it has 5.*seed 2 reads scene numbers up to "
                                         r"5 of proto-small \(test split\).*every seed reads scenes of its own.*fewer "
                                         r"seeds"):
        preflight(g.cells)
    with pytest.raises(BenchError, match=r"it has 5"):
        run_grid(g, tmp_path / "run")
    assert not (tmp_path / "run" / "cells.parquet").exists()  # nothing ran
    preflight([c for c in g.cells if c.seed < 2])
    # every scene of a split (scenes = 0) leaves nothing to another seed: refused at load
    all_scenes = body.replace("test_scenes = 2", "test_scenes = 0")
    with pytest.raises(BenchError, match=r"seed 1: segment proto-small \(test split\) reads every scene"):
        load_grid(grid_file(tmp_path, all_scenes, "all"))


# ------------------------------------------------------------------------------------ one identity
SELECTED = """version = "v7"
created_at = "2026-01-01T00:00:00+00:00"
seeds = [0]
[[validation]]
source = "synth-scannet"
target = [{dataset = "synth-val", split = "val", scenes = 4}]
[methods.ttt_kd]
selected = {lr = 0.0003, steps = 25}
fixed = {}
"""

TTTKD = """pairs = ["synth-scannet->synth-s3dis"]
backbones = ["spunet"]
teachers = ["synth2d"]
seeds = [0, 1]
test_scenes = 4
[[methods]]
name = "ttt_kd"
"""


def test_one_ttt_kd_cell_has_one_id_whatever_its_values_came_from(tmp_path):
    """Values from the selection file, written in the grid, or (for lr) left at the default: one id,
    hence one set of per-scene random seeds; the rows still say where each value came from."""
    from bench.cell import base_row
    from bench.grid import Overrides

    (tmp_path / "v7.toml").write_text(SELECTED)
    chosen = load_grid(grid_file(tmp_path, f'selected = "{tmp_path / "v7.toml"}"\n' + TTTKD, "sel")).cells
    written = load_grid(grid_file(tmp_path, TTTKD.replace('name = "ttt_kd"', 'name = "ttt_kd"\nlr = 3e-4\nsteps = 25'),
                                  "grid"), Overrides(selected="none")).cells
    assert [c.method_cfg.lr for c in chosen] == [3e-4, 3e-4] and [c.method_cfg.steps for c in chosen] == [25, 25]
    assert [c.cell_id for c in chosen] == [c.cell_id for c in written]
    assert len({c.cell_id for c in chosen}) == 2  # the two seeds are two cells
    rows = [base_row(c) for c in chosen + written]
    assert [r["hp_source"] for r in rows] == ["selected:v7"] * 2 + ["grid"] * 2
    assert json.loads(rows[0]["hp_sources"])["lr"] == "selected:v7"
    assert json.loads(rows[2]["hp_sources"])["lr"] == "grid"
    # a default written out is the same configuration as the default left out
    default_lr = METHODS.get("ttt_kd").config().lr
    a = load_grid(grid_file(tmp_path, TTTKD.replace('name = "ttt_kd"', f'name = "ttt_kd"\nlr = {default_lr}'), "a"),
                  Overrides(selected="none")).cells
    b = load_grid(grid_file(tmp_path, TTTKD, "b"), Overrides(selected="none")).cells
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    # the plain form carries the provenance to workers, and resolves to the same id
    from bench.spec import Cell

    back = Cell.from_dict(json.loads(json.dumps(chosen[0].to_dict())))
    assert back.cell_id == chosen[0].cell_id and back.provenance == chosen[0].provenance


def test_configs_are_built_once_per_distinct_table(tmp_path):
    body = 'pairs = ["proto-a->proto-b", "proto-a->proto-a"]\nseeds = [0, 1]\ntest_scenes = 2\n' \
           '[[methods]]\nname = "tent"\n[[methods]]\nname = "tent"\nlabel = "T2"\nlr = 0.01\n'
    cells = load_grid(grid_file(tmp_path, body)).cells
    assert len({id(c.backbone_cfg) for c in cells}) == 1 and len({id(c.recipe_cfg) for c in cells}) == 1
    assert len({id(c.method_cfg) for c in cells}) == 2
    assert len({id(c.data_cfgs["proto-a"]) for c in cells}) == 1


# -------------------------------------------------------------------------------------- duplicates
def test_views_all_is_the_largest_view_count_and_label_only_duplicates_run_once(tmp_path, caplog):
    body = """pairs = ["synth-scannet->synth-s3dis"]
backbones = ["spunet"]
teachers = ["synth2d"]
test_scenes = 2
[[methods]]
name = "ttt_kd"
views = [3, 10, "all", 12]
[[methods]]
name = "xmuda"
label = "xMUDA"
[[methods]]
name = "xmuda"
label = "xMUDA-noPL"
pl_weight = 0.0
"""
    import logging

    with caplog.at_level(logging.INFO, logger="bench.grid"):
        cells = load_grid(grid_file(tmp_path, body), {"selected": "none"}).cells
    views = sorted(str(c.lift.views) for c in cells if c.method == "ttt_kd")
    assert views == ["10", "3"]  # a synthetic scene has 10 views: "all" and 12 are the cell of views = 10
    assert [c.label for c in cells if c.method == "xmuda"] == ["xMUDA"]
    assert "xMUDA-noPL(pl_weight=0.0) is the same configuration as xMUDA" in caplog.text


def test_the_oracle_on_the_diagonal_is_reported_from_the_source_only_cell(tmp_path):
    body = """pairs = ["proto-a->proto-a", "proto-a->proto-b"]
test_scenes = 2
[[methods]]
name = "source"
label = "Source-Only"
[[methods]]
name = "source"
train_on = "target"
label = "Oracle"
"""
    g = load_grid(grid_file(tmp_path, body))
    assert len(g.cells) == 3  # the diagonal Oracle is not a cell of its own
    diag = next(c for c in g.cells if c.target == "proto-a")
    assert [a.label for a in diag.aliases] == ["Oracle"] and diag.aliases[0].alias_of == diag.cell_id
    run_grid(g, tmp_path / "run")
    store = ResultsStore(tmp_path / "run")
    cells, scenes = store.cells().set_index(["label", "target"]), store.scenes()
    assert len(cells) == 4 and set(cells["status"]) == {"ok"}
    so, oracle = cells.loc[("Source-Only", "proto-a")], cells.loc[("Oracle", "proto-a")]
    assert oracle["role"] == "control" and so["role"] == "baseline"
    assert oracle["reported_from"] == so["cell_id"] and so["reported_from"] == ""
    assert oracle["cell_id"] != so["cell_id"] and oracle["miou"] == so["miou"] and oracle["train_on"] == "target"
    assert cells.loc[("Oracle", "proto-b"), "reported_from"] == ""  # off the diagonal it is a model of its own
    a = scenes[scenes["cell_id"] == oracle["cell_id"]].sort_values("index")
    b = scenes[scenes["cell_id"] == so["cell_id"]].sort_values("index")
    assert list(a["miou"]) == list(b["miou"]) and len(a) == 2
    run_grid(g, tmp_path / "run")  # resumes: nothing to run, nothing doubled
    assert len(ResultsStore(tmp_path / "run").cells()) == 4


# ------------------------------------------------------------------------------------ calibration
def test_calibration_histogram_matches_an_explicit_count():
    from bench.cell import CALIB_BINS, calibration, ece

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 12, generator=g, dtype=torch.float64) * 3
    label = torch.randint(-1, 12, (500,), generator=g).numpy()
    classes = (0, 1, 2, 3, 5, 8)
    got = calibration(logits, label, classes)
    count, conf, right = np.zeros(CALIB_BINS), np.zeros(CALIB_BINS), np.zeros(CALIB_BINS)
    for i in range(500):
        if label[i] not in classes:
            continue
        p = torch.softmax(logits[i], 0)
        c = float(p.max())
        b = min(int(math.floor(c * CALIB_BINS)), CALIB_BINS - 1)
        count[b] += 1
        conf[b] += c
        right[b] += int(p.argmax()) == label[i]
    assert got["calib_count"] == count.astype(int).tolist() and got["calib_correct"] == right.astype(int).tolist()
    np.testing.assert_allclose(got["calib_conf"], conf, rtol=1e-5)
    assert ece([got]) == pytest.approx(np.abs(right - conf).sum() / count.sum(), rel=1e-5)
    assert math.isnan(ece([]))


def test_scene_rows_carry_calibration_and_the_methods_scene_stats(tmp_path):
    body = 'pairs = ["proto-a->proto-b"]\ntest_scenes = 3\n[[methods]]\nname = "proto_counting"\n'
    run_grid(load_grid(grid_file(tmp_path, body)), tmp_path / "run")
    store = ResultsStore(tmp_path / "run")
    cell, scenes = store.cells().iloc[0], store.scenes().sort_values("index")
    assert cell["status"] == "ok"
    for r in scenes.itertuples():
        conf = np.asarray(r.conf).reshape(12, 12)
        assert len(r.calib_count) == 15 and sum(r.calib_count) == conf.sum()
        assert sum(r.calib_correct) == np.trace(conf) and sum(r.calib_conf) <= conf.sum()
        assert len(r.pred_sample) == 128
    assert list(scenes["stat_index"]) == [0.0, 1.0, 2.0] and cell["stat_index"] == pytest.approx(1.0)
    assert cell["stat_half"] == 0.5
    count = np.sum(np.stack(scenes["calib_count"].to_numpy()), 0)
    conf = np.sum(np.stack(scenes["calib_conf"].to_numpy()), 0)
    right = np.sum(np.stack(scenes["calib_correct"].to_numpy()), 0)
    assert cell["ece"] == pytest.approx(np.abs(right - conf).sum() / count.sum())
    assert isinstance(scenes, pd.DataFrame)
