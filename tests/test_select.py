"""Hyper-parameter selection (``bench select``): validation pairs only, the versioned file, grids that
use it, and the provenance columns of result rows."""

import json
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import selection as sel_mod
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.grid import Overrides, load_grid
from bench.runner import run_grid
from bench.select import run_selection
from bench.selection import Selection, check_grid, load_selection
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
    assert len(rows) == 6 and set(rows["status"]) == {"ok"} and set(rows["grid"]) == {"tinysel"}
    for c in cands:
        mine = rows[rows["params"].map(lambda s: json.loads(s).get("lr")) == c["params"]["lr"]]
        assert set(mine["target"]) == {"sel-val", "sel-src:jitter@3"}
        assert c["score"] == pytest.approx(mine["miou"].mean())
        assert set(c["per_pair"]) == set(doc["validation_pairs"])
    # rule v2: the baseline (TENT without a step) ran on the same cells; one Adam step at lr 1e-4 is inert
    assert doc["format"] == 2 and doc["rule"] == "v2" and "inert_rule" in doc
    base = rows[rows["params"].map(lambda s: json.loads(s)) == {"steps": 0}]
    assert len(base) == 2 and tent["baseline"]["params"] == {"steps": 0}
    assert tent["baseline"]["score"] == pytest.approx(base["miou"].mean())
    by_lr = {c["params"]["lr"]: c for c in cands}
    assert by_lr[1e-4]["inert"] and not by_lr[0.1]["inert"] and not by_lr[0.1]["diverged"]
    assert tent["outcome"] == "selected" and tent["selected"] == {"lr": 0.1} and tent["score"] == by_lr[0.1]["score"]
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


def test_the_selection_rules_refuse_a_test_grid_on_a_validation_pair_s_data():
    """A validation pair on a corrupted domain's val scenes conflicts with a test grid that tests that
    corrupted domain (a fixture grid, tests/grids/corrupted.toml). That no shipped grid conflicts with the
    default selection grid is checked in tests/test_grids.py."""
    g = load_grid(str(Path(__file__).parent / "grids" / "corrupted.toml"), Overrides(selected="none"))
    bad = Selection(Path("select.toml"), "v0", "now", [{"source": "synth-scannet", "target": [
        {"dataset": "synth-scannet:jitter@3", "split": "val", "scenes": 4}]}], [0], {"tent": {"lr": 0.01}})
    with pytest.raises(BenchError, match="same corrupted domain synth-scannet:jitter@3"):
        check_grid(bad, g.all_cells, g.name)
    ok = Selection(Path("select.toml"), "v0", "now", [{"source": "synth-s3dis", "target": [
        {"dataset": "synth-s3dis:jitter@3", "split": "val", "scenes": 4}]}], [0], {"tent": {"lr": 0.01}})
    check_grid(ok, g.all_cells, g.name)


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


# ------------------------------------------------------------------------------------------- rule v2
def test_no_effect_names_equivalent_rows_and_identical_predictions_inert():
    """The inert rule (the report's, bench.stats.inert): equivalence of paired per-scene mIoU within 0.1
    points (bootstrap interval at 5 % each side), or the same predictions on >= 95 % of points."""
    from bench.select import agreement, no_effect

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 24)
    assert no_effect(base, base).inert  # identical
    assert no_effect(base + 0.0002 + rng.normal(0, 0.0002, 24), base).inert  # 0.02 points, tight
    shifted = no_effect(base + 0.003, base)  # 0.3 points on every scene: an effect, however consistent
    assert not shifted.inert and shifted.mean_diff == pytest.approx(0.003) and "differs" in shifted.why
    noisy = no_effect(base + rng.normal(0, 0.02, 24), base)  # mean near 0 but 2-point noise: not shown equivalent
    assert not noisy.inert and noisy.ci[0] < -0.001 < 0.001 < noisy.ci[1]
    assert no_effect(base + 0.003, base, same_points=0.97).inert  # the prediction criterion alone suffices
    assert not no_effect(base + 0.003, base, same_points=0.90).inert
    assert not no_effect([0.5], [0.49]).inert and no_effect([0.5], [0.5]).inert  # one scene: the difference itself
    assert no_effect([0.5, np.nan], [0.5, 0.3]).n == 1  # NaN pairs left out
    with pytest.raises(BenchError, match="pair them by scene"):
        no_effect([0.1, 0.2], [0.1])
    a, b = bytes([1, 2, 3, 4]), bytes([1, 2, 0, 4])
    assert agreement([a, a], [a, b]) == pytest.approx(7 / 8)
    assert agreement([a, a], [a, b], weights=[3, 1]) == pytest.approx((3 * 1 + 1 * 0.75) / 4)
    assert np.isnan(agreement([None], [a]))


def _cands(table: dict, base: list[float]):
    """Candidates of a method from {lr: per-scene mIoU of its one validation cell}, with a baseline."""
    from types import SimpleNamespace

    from bench.select import Candidate

    seg = SimpleNamespace(to_dict=lambda: {"dataset": "v", "split": "val", "scenes": len(base)})
    cells, scenes = [], []

    def cell(name, mious):
        c = SimpleNamespace(cell_id=name, source="s", stream=[seg])
        cells.append({"cell_id": name, "miou": float(np.mean(mious)), "adapt_s_per_scene": 0.1, "steps_per_scene": 1})
        scenes.extend({"cell_id": name, "scene": f"s{i}", "miou": v, "probe": False, "n_points": 100,
                       "pred_sample": b""} for i, v in enumerate(mious))
        return c

    cands = [Candidate("sar", {"lr": lr}, {}, [cell(f"c{lr}", m)]) for lr, m in table.items()]
    baseline = Candidate("sar", {"steps": 0}, {}, [cell("base", base)])
    return cands, pd.DataFrame(cells).set_index("cell_id"), pd.DataFrame(scenes), {"sar": baseline}


def test_inert_and_diverged_candidates_are_not_chosen_and_none_left_keeps_the_defaults():
    from bench.select import NO_CANDIDATE_DIFFERS, _score

    base = list(np.linspace(0.30, 0.50, 12))
    inert = [v + 0.0001 for v in base]  # the best score, but no effect: v1 chose such a candidate by noise
    worse = [v - 0.02 for v in base]  # an effect (harmful)
    gone = [0.05] * 12  # collapsed
    cands, rows, scenes, baselines = _cands({1e-3: inert, 1e-1: worse, 1.0: gone}, base)
    r = _score(cands, rows, None, scenes=scenes, baselines=baselines)["sar"]
    flags = {c["params"]["lr"]: (c["inert"], c["diverged"]) for c in r["candidates"]}
    assert flags == {1e-3: (True, False), 1e-1: (False, False), 1.0: (False, True)}
    assert r["outcome"] == "selected" and r["selected"] == {"lr": 1e-1} and r["largest_stable_lr"] == 1e-1
    assert r["baseline"] == {"params": {"steps": 0}, "score": pytest.approx(np.mean(base))}
    assert _score(cands, rows, None)["sar"]["selected"] == {"lr": 1e-3}  # rule v1 (no baseline): the best score
    cands, rows, scenes, baselines = _cands({1e-3: inert, 1e-2: [v - 0.0002 for v in base], 1.0: gone}, base)
    r = _score(cands, rows, None, scenes=scenes, baselines=baselines)["sar"]
    assert r["outcome"] == NO_CANDIDATE_DIFFERS and r["selected"] == {}
    assert "2 of 3 candidates inert" in r["why"] and "1 diverged" in r["why"] and "steps=0" in r["why"]


def test_a_selection_where_no_candidate_differs_keeps_the_defaults_and_rows_say_why(selected, tmp_path):
    """End to end on the tiny grids: TENT at learning rates too small to move anything is inert against
    TENT without a step; the file keeps the default and says why; grids using it record it per row."""
    from bench.cell import base_row

    d, _ = selected
    p = tmp_path / "sel_inert.toml"
    p.write_text(SELECT_GRID.replace("FOR", str(d / "seltest.toml")).replace("lr = [1e-4, 0.1]", "lr = [1e-9, 1e-8]"))
    out = run_selection(str(p), out=tmp_path / "v3.toml", runs=d / "runs", executor="inprocess", workers=1)
    doc = tomllib.loads(out.read_text())
    tent = doc["methods"]["tent"]
    assert tent["outcome"] == "no candidate differs from the baseline" and tent["selected"] == {}
    assert all(c["inert"] for c in tent["candidates"]) and "2 of 2 candidates inert" in tent["why"]
    sel = load_selection(out)
    assert sel.values["tent"] == {} and sel.notes["tent"].startswith("no candidate differs from the baseline")
    grid = tmp_path / "use.toml"
    grid.write_text(f'name = "use"\nselected = "{out}"\npairs = ["sel-src->sel-shift"]\ntest_scenes = 1\n' + COMMON +
                    '[[methods]]\nname = "tent"\n[[methods]]\nname = "source"\n')
    cells = {c.method: c for c in load_grid(str(grid)).cells}
    assert cells["tent"].method_cfg.lr == METHODS.get("tent").config().lr  # the default is kept
    row = base_row(cells["tent"])
    assert row["hp_note"].startswith("v3: no candidate differs from the baseline; defaults kept")
    assert row["hp_source"] == "default" and row["hp_selected_on"].startswith("sel-src->sel-val")
    assert base_row(cells["source"])["hp_note"] == ""


def test_validation_streams_shorter_than_the_test_streams_are_refused(selected, tmp_path):
    d, _ = selected
    long_test = tmp_path / "long.toml"
    long_test.write_text(TEST_GRID.replace("test_scenes = 1", "test_scenes = 3").replace('name = "source"',
                                                                                         'name = "tent"'))
    p = tmp_path / "sel.toml"
    p.write_text(SELECT_GRID.replace("FOR", str(long_test)))
    with pytest.raises(BenchError, match=r"(?s)validation streams must be as long as the test streams.*"
                                         r"sel-src->sel-val\(val,1\) reads 1 scenes, the test streams it stands for up "
                                         r"to 3 \(grid seltest, tent on sel-src->sel-src\).*at least 3 scenes"):
        run_selection(str(p), out=tmp_path / "never.toml", runs=tmp_path / "runs", executor="inprocess")
    assert not (tmp_path / "runs").exists()
    # a test grid that pins selected = "none" does not use the selection, so its streams do not count
    long_test.write_text('selected = "none"\n' + long_test.read_text())
    assert run_selection(str(p), dry_run=True) is None
