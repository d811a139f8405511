"""Hyper-parameter selection (``bench select``): validation pairs only, the versioned file, grids that
use it, and the provenance columns of result rows."""

import json
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest

from bench import select as sel_mod
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.grid import GRID_DIR, Overrides, load_grid
from bench.runner import run_grid
from bench.select import Selection, check_grid, load_selection, run_selection
from bench.spec import Cell
from bench.store import ResultsStore
from methods import METHODS


class TwoPlanes(Dataset):
    """Two labelled planes per scene, seeded by a stable hash of the scene name; no views."""

    has_views = False

    def __init__(self, shift: float):
        self.name, self.classes, self.shift = f"sel{shift:g}", (0, 1), shift

    def scene_names(self, split, count=None):
        self._check_split(split)
        return [f"{split}_{i}" for i in range(count or 2)]

    def load(self, name, with_views=True):
        rng = np.random.default_rng(zlib.crc32(f"{self.name}/{name}".encode()))
        n = 400
        coord = rng.uniform(0, 2, (n, 3)).astype(np.float32)
        label = (coord[:, 2] > 1).astype(np.int64)
        color = np.clip(np.where(label[:, None] == 1, 0.8, 0.2) + self.shift + rng.normal(0, 0.05, (n, 3)), 0, 1)
        normal = np.tile([0, 0, 1], (n, 1)).astype(np.float32)
        return Scene(name, self.name, coord, color.astype(np.float32), label, normal)

    def fingerprint(self):
        return {"dataset": self.name}


DATASETS.register("sel-src", description="test dataset (selection source)")(lambda **kw: TwoPlanes(0.0))
DATASETS.register("sel-shift", description="test dataset (selection test target)")(lambda **kw: TwoPlanes(0.15))
DATASETS.register("sel-val", description="test dataset (selection validation domain)")(lambda **kw: TwoPlanes(0.1))

COMMON = """
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
seeds = [0]
train_scenes = 2
val_scenes = 0
[train]
epochs = 1
"""

# the test grid the selection is for: in-distribution and one shifted target, test split
TEST_GRID = 'name = "seltest"\npairs = ["sel-src->sel-src", "sel-src->sel-shift"]\ntest_scenes = 1\n' + COMMON + """
[[methods]]
name = "source"
"""

SELECT_GRID = """
name = "tinysel"
streams = [
  { source = "sel-src", target = [{ dataset = "sel-val", split = "val", scenes = 1 }] },
  { source = "sel-src", target = [{ dataset = "sel-src:jitter@3", split = "val", scenes = 1 }] },
]
""" + COMMON + """
[select]
for_grids = ["FOR"]

[select.space.tent]
lr = [1e-4, 0.1]

[[methods]]
name = "tent"
steps = 1
"""


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """One tiny selection: TENT, 2 learning rates, 2 validation pairs of 1 scene each."""
    d = tmp_path_factory.mktemp("select")
    (d / "seltest.toml").write_text(TEST_GRID)
    (d / "sel.toml").write_text(SELECT_GRID.replace("FOR", str(d / "seltest.toml")))
    out = run_selection(str(d / "sel.toml"), out=d / "v1.toml", runs=d / "runs", executor="inprocess", workers=1,
                        command="test")
    return d, out


def test_selection_writes_a_versioned_file_with_every_candidate(selected):
    d, out = selected
    assert out == d / "v1.toml" and out.is_file()
    doc = tomllib.loads(out.read_text())
    assert doc["version"] == "v1" and doc["seeds"] == [0] and doc["git_commit"] and doc["created_at"]
    assert doc["validation_pairs"] == ["sel-src->sel-val(val,1)", "sel-src->sel-src:jitter@3(val,1)"]
    assert doc["checked_against"] == ["seltest"]
    assert doc["grid_file"] == str((d / "sel.toml").resolve())  # outside the project: absolute
    tent = doc["methods"]["tent"]
    assert tent["fixed"] == {"steps": 1} and tent["validation_cells"] == 2
    cands = tent["candidates"]
    assert [c["params"] for c in cands] == [{"lr": 1e-4}, {"lr": 0.1}]
    # each score is the mean mIoU of that candidate's validation cells, as the run folder holds them
    rows = ResultsStore(d / "runs").cells()
    assert len(rows) == 4 and set(rows["status"]) == {"ok"} and set(rows["grid"]) == {"tinysel"}
    for c in cands:
        mine = rows[rows["params"].map(lambda s: json.loads(s).get("lr")) == c["params"]["lr"]]
        assert set(mine["target"]) == {"sel-val", "sel-src:jitter@3"}
        assert c["score"] == pytest.approx(mine["miou"].mean())
        assert set(c["per_pair"]) == set(doc["validation_pairs"])
    best = max(cands, key=lambda c: c["score"])
    assert tent["selected"] == best["params"] and tent["score"] == best["score"]
    # a second selection never overwrites a version
    with pytest.raises(BenchError, match="never overwritten"):
        run_selection(str(d / "sel.toml"), out=out, runs=d / "runs", executor="inprocess", workers=1)


def test_grid_uses_selected_values_and_rows_record_where_they_came_from(selected, tmp_path):
    d, out = selected
    lr = tomllib.loads(out.read_text())["methods"]["tent"]["selected"]["lr"]
    grid = tmp_path / "use.toml"
    head = f'name = "use"\nselected = "{out}"\npairs = ["sel-src->sel-shift"]\ntest_scenes = 1\n'
    grid.write_text(head + COMMON + """
[[methods]]
name = "tent"
label = "TENT"

[[methods]]
name = "tent"
label = "TENT-0.003"
lr = 0.003

[[methods]]
name = "source"
""")
    g = load_grid(str(grid))
    by = {c.label: c for c in g.cells}
    assert by["TENT"].method_cfg.lr == lr and by["TENT"].method_cfg.steps == 1
    assert by["TENT-0.003"].method_cfg.lr == 0.003  # an explicit grid value wins over the selected one
    assert Cell.from_dict(by["TENT"].to_dict()).provenance == by["TENT"].provenance  # survives workers
    assert by["TENT"].provenance["selected"] == {"lr": lr, "steps": 1}
    run_grid(g, tmp_path / "run")
    rows = ResultsStore(tmp_path / "run").cells().set_index("label")
    assert set(rows["status"]) == {"ok"}
    assert rows.loc["TENT", "hp_source"] == "selected:v1"
    assert json.loads(rows.loc["TENT", "hp_sources"]) == {"lr": "selected:v1", "steps": "selected:v1"}
    assert rows.loc["TENT", "hp_selected_on"] == "sel-src->sel-val(val,1); sel-src->sel-src:jitter@3(val,1) (seeds 0)"
    assert rows.loc["TENT", "hp_selected_at"] == load_selection(out).created_at
    assert json.loads(rows.loc["TENT-0.003", "hp_sources"]) == {"lr": "grid", "steps": "selected:v1"}
    assert rows.loc["TENT-0.003", "hp_source"] == "grid+selected:v1"
    assert rows.loc["source", "hp_source"] == "default" and rows.loc["source", "hp_selected_on"] == ""
    # ignoring the file (the --selected flag; a grid's `selected = "none"` does the same)
    c = next(c for c in load_grid(str(grid), Overrides(selected="none")).cells if c.label == "TENT")
    assert c.method_cfg.lr == METHODS.get("tent").config().lr and c.provenance is None


def test_selection_refuses_test_splits_and_test_domains(selected, tmp_path):
    d, _ = selected
    base = SELECT_GRID.replace("FOR", str(d / "seltest.toml"))
    cases = {
        'dataset = "sel-val", split = "test"': r"sel-val reads the test split",
        'dataset = "sel-shift", split = "val"': r"its domain sel-shift is the test target sel-shift \(test split\)",
        'dataset = "sel-src", split = "val"': r"its domain sel-src is the test target sel-src",  # clean source
        'dataset = "sel-shift:jitter@3", split = "val"': r"its domain sel-shift is the test target",
    }
    for seg, msg in cases.items():
        p = tmp_path / "bad.toml"
        p.write_text(base.replace('dataset = "sel-val", split = "val"', seg))
        with pytest.raises(BenchError, match=msg):
            run_selection(str(p), out=tmp_path / "never.toml", runs=tmp_path / "runs", executor="inprocess")
        assert not (tmp_path / "never.toml").exists() and not (tmp_path / "runs").exists()
    # held-out corrupted source scenes are refused when the test grid reads the same corrupted domain
    (tmp_path / "t2.toml").write_text(TEST_GRID.replace('"sel-src->sel-shift"', '"sel-src->sel-src:jitter@3"'))
    p = tmp_path / "bad.toml"
    p.write_text(SELECT_GRID.replace("FOR", str(tmp_path / "t2.toml")))
    with pytest.raises(BenchError, match=r"the same corrupted domain sel-src:jitter@3 is the test target"):
        run_selection(str(p), out=tmp_path / "never.toml", runs=tmp_path / "runs", executor="inprocess")
    # ... and altogether with allow_source_val = false
    p.write_text(base.replace("[select]\n", "[select]\nallow_source_val = false\n"))
    with pytest.raises(BenchError, match=r"sel-src:jitter@3\(val,1\): its domain sel-src is the test target .*"
                                         r"allow_source_val = false"):
        run_selection(str(p), out=tmp_path / "never.toml", runs=tmp_path / "runs", executor="inprocess")


def test_a_grid_that_tests_on_the_validation_data_is_refused(selected, tmp_path):
    _, out = selected
    grid = tmp_path / "leak.toml"
    grid.write_text(f'name = "leak"\nselected = "{out}"\npairs = ["sel-src->sel-val"]\n' + COMMON +
                    '[[methods]]\nname = "tent"\n')
    with pytest.raises(BenchError, match=r"(?s)leak.*tests on data that the selected values .*v1\.toml were chosen "
                                         r"on.*its domain sel-val is the test target sel-val.*selected = \"none\""):
        load_grid(str(grid))
    assert load_grid(str(grid), Overrides(selected="none")).cells  # the documented way out


def test_which_file_a_grid_uses(tmp_path, monkeypatch):
    monkeypatch.setattr(sel_mod, "SELECTED_DIR", tmp_path / "selected")
    monkeypatch.delenv(sel_mod.ENV_VAR, raising=False)
    grid = tmp_path / "g.toml"
    grid.write_text('name = "g"\npairs = ["sel-src->sel-shift"]\n' + COMMON + '[[methods]]\nname = "tent"\n')
    assert load_grid(str(grid)).cells[0].provenance is None  # no file yet: defaults
    (tmp_path / "selected").mkdir()
    for v, lr in (("v1", 0.01), ("v2", 0.02), ("v10", 0.05)):
        (tmp_path / "selected" / f"{v}.toml").write_text(
            f'version = "{v}"\ncreated_at = "2026-01-01T00:00:00+00:00"\nseeds = [0]\n'
            '[[validation]]\nsource = "sel-src"\ntarget = [{dataset = "sel-val", split = "val", scenes = 1}]\n'
            f'[methods.tent]\nselected = {{lr = {lr}}}\nfixed = {{}}\n')
    assert load_grid(str(grid)).cells[0].method_cfg.lr == 0.05  # the latest version (10 > 2 > 1)
    assert load_grid(str(grid), Overrides(selected="v2")).cells[0].method_cfg.lr == 0.02
    monkeypatch.setenv(sel_mod.ENV_VAR, "none")
    assert load_grid(str(grid)).cells[0].method_cfg.lr == METHODS.get("tent").config().lr
    grid.write_text(grid.read_text().replace('name = "g"', 'name = "g"\nselected = "v1"'))
    assert load_grid(str(grid)).cells[0].method_cfg.lr == 0.01  # the grid's key beats the environment
    with pytest.raises(BenchError, match=r"selected = 'v3': no .*v3\.toml \(versions: v1, v2, v10\)"):
        load_grid(str(grid), Overrides(selected="v3"))
    bad = tmp_path / "selected" / "v1.toml"
    bad.write_text(bad.read_text().replace("lr = 0.01", 'lr = "fast"'))
    with pytest.raises(BenchError, match=r"selected-values file .*v1\.toml, method 'tent': .*lr"):
        load_grid(str(grid))


def test_every_declared_search_space_is_valid_and_small():
    from bench.registry import config_fields, make_config

    searched = 0
    for e in METHODS.entries():
        space = getattr(e.config, "SEARCH", None) or {}
        assert "SEARCH" not in config_fields(e), f"{e.name}: SEARCH must be a ClassVar, not a parameter"
        for k, values in space.items():
            assert k in config_fields(e), f"{e.name}: SEARCH key {k} is not a parameter"
            assert len(values) >= 2 and len(set(values)) == len(values)
            for v in values:
                make_config(e, {k: v}, "method")
        if space:
            searched += 1
            assert "lr" in space, f"{e.name}: a search space includes the learning rate"
            if "steps" in config_fields(e):
                assert "steps" in space, f"{e.name}: a method with steps per scene searches them"
            assert int(np.prod([len(v) for v in space.values()])) <= 9, f"{e.name}: keep the space small"
    assert searched >= 10


def test_default_selection_grid_reads_no_test_pair():
    """The default selection grid's validation pairs conflict with no built-in test grid (what
    load_grid checks for every grid once a selection exists); synth-val may not be registered yet,
    so the rules run on the grid file's streams."""
    raw = tomllib.loads((GRID_DIR / "select.toml").read_text())
    assert raw["select"]["for_grids"] == "all"
    validation = [{"source": s["source"], "target": s["target"]} for s in raw["streams"]]
    assert any(seg["dataset"] == "synth-val" for v in validation for seg in v["target"])
    assert all(seg["split"] == "val" for v in validation for seg in v["target"])
    fake = Selection(GRID_DIR / "select.toml", "v0", "now", validation, raw["seeds"], {"tent": {"lr": 0.01}})
    grids = [p for p in sorted(GRID_DIR.glob("*.toml")) if "select" not in tomllib.loads(p.read_text())]
    assert len(grids) >= 5
    for p in grids:
        g = load_grid(str(p), Overrides(selected="none"))
        check_grid(fake, g.all_cells, g.name)
    # the same rules do refuse a test grid that reads a validation pair's data
    g = load_grid("corruptions", Overrides(selected="none"))
    bad = Selection(GRID_DIR / "select.toml", "v0", "now", [{"source": "synth-scannet", "target": [
        {"dataset": "synth-scannet:jitter@3", "split": "val", "scenes": 4}]}], [0], {"tent": {"lr": 0.01}})
    with pytest.raises(BenchError, match="same corrupted domain synth-scannet:jitter@3"):
        check_grid(bad, g.all_cells, g.name)


def test_dry_run_names_the_checked_test_grids_and_what_the_budget_does():
    """``bench select --dry-run`` prints the plan, the test grids the validation pairs were checked
    against, and (with --budget-s) that the budget filters candidates after their time is measured."""
    from rich.console import Console

    from bench.select import run_selection

    console = Console(record=True, width=200)
    assert run_selection(dry_run=True, budget_s=5, console=console) is None
    text = console.export_text()
    assert "selection plan" in text and "ttt_kd" in text
    checked = text.split("test grid(s): ", 1)[1].split(";", 1)[0].split(", ")
    assert {"id_ood", "corruptions", "long_stream"} <= set(checked) and "select" not in checked
    assert "--budget-s 5: every candidate above still runs" in text


def test_candidates_within_the_tolerance_count_as_tied_and_the_cheapest_wins():
    """Scores within ``tolerance`` of the best are ties broken by fewer steps per scene (then the higher
    score); a candidate further below the best never wins however cheap; tolerance 0 = the best score."""
    from types import SimpleNamespace

    import pandas as pd

    from bench.select import Candidate, _score

    seg = SimpleNamespace(to_dict=lambda: {"dataset": "v", "split": "val", "scenes": 1})
    table = {  # (lr, steps): mIoU of two validation cells, steps per scene
        (1e-4, 5): ([0.290, 0.292], 5), (1e-4, 25): ([0.324, 0.324], 25), (1e-4, 50): ([0.326, 0.328], 50),
        (3e-4, 25): ([0.322, 0.324], 25), (3e-4, 5): ([0.305, 0.305], 5),
    }
    cands, rows = [], []
    for (lr, steps), (mious, sps) in table.items():
        cells = [SimpleNamespace(cell_id=f"{lr}-{steps}-{i}", source="s", stream=[seg]) for i in range(2)]
        cands.append(Candidate("ttt_kd", {"lr": lr, "steps": steps}, {}, cells))
        rows += [{"cell_id": c.cell_id, "miou": v, "adapt_s_per_scene": sps / 5, "steps_per_scene": sps}
                 for c, v in zip(cells, mious)]
    rows = pd.DataFrame(rows).set_index("cell_id")
    r = _score(cands, rows, None, tolerance=0.005)["ttt_kd"]
    assert r["best_score"] == pytest.approx(0.327)  # 50 steps scores best ...
    assert r["selected"] == {"lr": 1e-4, "steps": 25}  # ... but 25 steps is within 0.5 points and half the cost
    assert _score(cands, rows, None, tolerance=0.0)["ttt_kd"]["selected"] == {"lr": 1e-4, "steps": 50}
    assert _score(cands, rows, None, tolerance=0.05)["ttt_kd"]["selected"] == {"lr": 3e-4, "steps": 5}
    assert _score(cands, rows, 2.0, tolerance=0.005)["ttt_kd"]["selected"] == {"lr": 3e-4, "steps": 5}  # budget


def test_the_projects_own_selection_grid_is_recorded_relative_to_the_project():
    """A committed selection file must not carry one clone's absolute path."""
    from bench.select import _shown_path

    root = Path(__file__).resolve().parents[1]
    assert _shown_path(root / "bench" / "grids" / "select.toml") == "bench/grids/select.toml"
    doc = tomllib.loads((root / "bench" / "selected" / "v1.toml").read_text())
    assert not Path(doc["grid_file"]).is_absolute()
