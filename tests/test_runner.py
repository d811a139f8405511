"""The runner with a tiny in-test method and dataset registered from the test itself."""

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.grid import load_grid
from bench.runner import run_grid
from bench.store import ResultsStore
from methods import METHODS
from methods.base import Method, MethodConfig


class TinyDataset(Dataset):
    """Two labelled planes per scene, seeded by the scene name; no views."""

    has_views = False

    def __init__(self, shift: float = 0.0, **_):
        self.name, self.classes, self.shift = f"tiny{shift:g}", (0, 1), shift

    def scene_names(self, split, count=None):
        return [f"{split}_{i}" for i in range(count or 2)]

    def load(self, name, with_views=True):
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        n = 400
        coord = rng.uniform(0, 2, (n, 3)).astype(np.float32)
        label = (coord[:, 2] > 1).astype(np.int64)
        color = np.clip(np.where(label[:, None] == 1, 0.8, 0.2) + self.shift + rng.normal(0, 0.05, (n, 3)), 0, 1)
        normal = np.tile([0, 0, 1], (n, 1)).astype(np.float32)
        return Scene(name, self.name, coord, color.astype(np.float32), label, normal)

    def fingerprint(self):
        return {"dataset": self.name}


DATASETS.register("tiny-a", description="test dataset")(lambda **kw: TinyDataset(0.0))
DATASETS.register("tiny-b", description="test dataset, shifted colours")(lambda **kw: TinyDataset(0.15))


@dataclass
class FlakyConfig(MethodConfig):
    fail_on: str = ""


@METHODS.register("flaky", config=FlakyConfig)
class Flaky(Method):
    """test method: fails on one target"""

    def adapt(self, inp):
        if self.cfg.fail_on and inp.batch.num_scenes and self.cfg.fail_on == os.environ.get("FLAKY_TARGET"):
            raise RuntimeError("boom")
        return 0


GRID = """
name = "tiny"
datasets = ["tiny-a", "tiny-b"]
pairs = "all"
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
seeds = [0]
train_scenes = 2
val_scenes = 0
test_scenes = 2
[train]
epochs = 1
[[methods]]
name = "source"
label = "Source-Only"
[[methods]]
name = "bn_adapt"
label = "BN-Adapt"
prior = [0.0, 0.5]
"""


@pytest.fixture
def grid_file(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(GRID)
    return p


def test_expansion_and_validation(tmp_path, grid_file):
    g = load_grid(str(grid_file))
    assert len(g.cells) == 4 * 3  # 4 pairs x (source + 2 bn_adapt priors)
    assert len({c.cell_id for c in g.cells}) == 12
    for bad, msg in [
        (GRID.replace('pairs = "all"', 'pairs = "all"\nfoo = 1'), "unknown key\\(s\\) foo"),
        (GRID.replace('name = "bn_adapt"', 'name = "bn_adapd"'), "unknown method 'bn_adapd'; valid names: .*bn_adapt"),
        (GRID.replace("prior = [0.0, 0.5]", "priori = 1"), "no parameter 'priori'"),
        (GRID.replace('"tiny-b"]', '"tiny-c"]'), "unknown dataset 'tiny-c'"),
        (GRID.replace('name = "spunet"', 'name = "minkunet"'), "unknown backbone 'minkunet'"),
        (GRID.replace("[[methods]]\nname = \"source\"", "[[methods]]\nname = \"ttt_kd\""), "needs a teacher"),
    ]:
        p = tmp_path / "bad.toml"
        p.write_text(bad)
        with pytest.raises(BenchError, match=msg):
            load_grid(str(p))
    with pytest.raises(BenchError, match="grid 'nope' not found"):
        load_grid("nope")


def test_run_resume_and_no_doubles(tmp_path, grid_file):
    g = load_grid(str(grid_file))
    out = tmp_path / "res"
    r1 = run_grid(g, out, only=["target=tiny-b"])
    assert r1 == {"ran": 6, "errors": 0, "seconds": r1["seconds"]}
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == 6 and set(cells["status"]) == {"ok"}
    assert (out / "cells.csv").is_file() and (out / "env.json").is_file() and (out / "config.toml").is_file()
    scenes = pd.read_parquet(out / "scenes.parquet")
    assert len(scenes) == 12
    # rerun: finished cells are skipped; the remaining ones run
    r2 = run_grid(g, out)
    assert r2["ran"] == 6
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == 12 and cells["cell_id"].is_unique
    assert run_grid(g, out)["ran"] == 0
    # per-class IoU, steps, timing and versions are recorded with every row
    row = cells.iloc[0]
    for col in ("miou", "iou_wall", "iou_floor", "steps_per_scene", "adapt_s_per_scene", "infer_s_per_scene",
                "peak_mem_mb", "git_commit", "torch_version", "params", "episodic", "train_cfg"):
        assert col in cells.columns, col
    assert 0 <= row["miou"] <= 1


def test_error_cell_is_recorded_and_grid_goes_on(tmp_path, grid_file, monkeypatch):
    text = GRID + '[[methods]]\nname = "flaky"\nfail_on = "tiny-a"\n'
    p = tmp_path / "g.toml"
    p.write_text(text)
    monkeypatch.setenv("FLAKY_TARGET", "tiny-a")
    g = load_grid(str(p))
    out = tmp_path / "res"
    res = run_grid(g, out, only=["target=tiny-a"])
    cells = pd.read_parquet(out / "cells.parquet")
    err = cells[cells["status"] == "error"]
    assert res["errors"] == 2 and len(err) == 2 and (err["error"] == "RuntimeError: boom").all()
    assert (cells["status"] == "ok").sum() == 6
    # the errored cells run again on the next run and replace their rows
    monkeypatch.setenv("FLAKY_TARGET", "none")
    assert run_grid(g, out, only=["target=tiny-a"])["ran"] == 2
    cells = pd.read_parquet(out / "cells.parquet")
    assert len(cells) == 8 and (cells["status"] == "ok").all()


def test_orphan_scene_rows_are_dropped(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"cell_id": "a", "status": "ok", "miou": 0.5}, [{"cell_id": "a", "scene": "s", "miou": 0.5}])
    # a crash between the scene write and the cell write leaves scene rows of cell b without a cell row
    pd.concat([pd.read_parquet(store.scenes_path), pd.DataFrame([{"cell_id": "b", "scene": "s", "miou": 0.1}])]
              ).to_parquet(store.scenes_path)
    assert set(store.scenes()["cell_id"]) == {"a"}
    store.append({"cell_id": "b", "status": "ok", "miou": 0.2}, [{"cell_id": "b", "scene": "s", "miou": 0.2}])
    sc = pd.read_parquet(store.scenes_path)
    assert len(sc) == 2 and sc.loc[sc["cell_id"] == "b", "miou"].item() == 0.2


def test_lock_stops_a_second_writer(tmp_path):
    store = ResultsStore(tmp_path)
    with store.lock():
        with pytest.raises(BenchError, match="being written by another run"):
            with ResultsStore(tmp_path).lock():
                pass


def test_killed_run_resumes_without_loss(tmp_path, grid_file):
    """Kill a run mid-grid (SIGKILL), rerun: every cell exactly once."""
    out = tmp_path / "res"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        import test_runner  # registers the tiny datasets
        from bench.grid import load_grid
        from bench.runner import run_grid
        from bench import cell
        orig = cell.run_cell
        def slow(c):
            r = orig(c)
            time.sleep(0.4)
            return r
        cell.run_cell = slow
        run_grid(load_grid({str(grid_file)!r}), __import__('pathlib').Path({str(out)!r}))
    """)
    env = {**os.environ, "TTT_BENCH_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    store = ResultsStore(out)
    import time

    deadline = time.time() + 120
    while time.time() < deadline and (not store.cells_path.is_file() or len(store.cells()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(store.cells())
    assert 3 <= n_before < 12
    res = run_grid(load_grid(str(grid_file)), out)
    cells = store.cells()
    assert res["ran"] == 12 - n_before
    assert len(cells) == 12 and cells["cell_id"].is_unique
    assert len(store.scenes()) == 24


def _rows(out):
    df = pd.read_parquet(out / "cells.parquet").sort_values("cell_id")
    return df[["cell_id", "miou", "steps_total"]].reset_index(drop=True)


SYNTH_GRID = GRID.replace('"tiny-a", "tiny-b"', '"synth-scannet"').replace("train_scenes = 2", "train_scenes = 1")


def _synth_grid(tmp_path):
    # worker processes import only the package, so these tests use a registered synthetic dataset
    src = tmp_path / "grid.toml"
    src.write_text(SYNTH_GRID.replace("test_scenes = 2", "test_scenes = 1"))
    return load_grid(str(src))


def test_pool_executor_matches_inprocess(tmp_path):
    g = _synth_grid(tmp_path)
    run_grid(g, tmp_path / "a", only=["method=bn_adapt"])
    run_grid(g, tmp_path / "b", only=["method=bn_adapt"], executor="pool", workers=2)
    pd.testing.assert_frame_equal(_rows(tmp_path / "a"), _rows(tmp_path / "b"))


@pytest.mark.slow
def test_ray_executor_matches_inprocess(tmp_path):
    pytest.importorskip("ray")
    g = _synth_grid(tmp_path)
    run_grid(g, tmp_path / "a", only=["method=bn_adapt"])
    run_grid(g, tmp_path / "b", only=["method=bn_adapt"], executor="ray", workers=2)
    pd.testing.assert_frame_equal(_rows(tmp_path / "a"), _rows(tmp_path / "b"))


def test_schedule_puts_each_models_first_cell_first(grid_file):
    from bench.runner import schedule

    cells = load_grid(str(grid_file)).cells
    order = schedule(cells)
    assert sorted(c.cell_id for c in order) == sorted(c.cell_id for c in cells)
    keys = [c.model_key() for c in order]
    n_models = len(set(keys))
    assert n_models == 2  # one source model per training dataset (tiny-a, tiny-b)
    assert len(set(keys[:n_models])) == n_models  # the trainings come first, side by side in a pool
    rest = [c.cell_id for c in order[n_models:]]
    assert rest == [c.cell_id for c in cells if c.cell_id in rest]  # the rest keep grid order


def test_auto_executor(monkeypatch):
    from bench import executors
    from bench.executors import InProcess, Pool, make_executor

    monkeypatch.setattr(executors, "cpu_cores", lambda: 4)
    ex = make_executor("auto", device="cpu", n_cells=10)
    assert isinstance(ex, Pool) and ex.workers == 4 and ex.threads() == 1
    assert make_executor("auto", device="cpu", n_cells=3).workers == 3  # no idle workers
    assert isinstance(make_executor("auto", device="cpu", n_cells=1), InProcess)
    assert isinstance(make_executor("auto", device="cuda"), InProcess)
    assert make_executor("pool", workers=2).threads() == 2
    with pytest.raises(BenchError, match="unknown executor 'threads'; valid: auto"):
        make_executor("threads")
