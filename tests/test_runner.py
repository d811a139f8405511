"""The runner with a tiny in-test method and dataset registered from the test itself."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.grid import load_grid
from bench.runner import run_grid
from bench.store import ResultsStore
from methods import METHODS
from methods.base import Method, MethodConfig, Needs


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
    assert r1 == {"ran": 6, "errors": 0, "seconds": r1["seconds"], "out": out}
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


def test_reader_never_sees_a_table_being_replaced(tmp_path):
    """`bench status` or a report reading while a run appends: every read is a whole table.

    pyarrow opened the path twice (footer, then pages); a rename in between gave a reader the footer of
    one file and the pages of the next ("Couldn't deserialize thrift"), about 1 read in 30 here.
    """
    import threading
    import time

    store = ResultsStore(tmp_path / "res")
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            store.append({"cell_id": f"c{i}", "status": "ok", "miou": float(i)},
                         [{"cell_id": f"c{i}", "scene": "s", "miou": 0.1}])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    reads, t0 = 0, time.time()
    try:
        while time.time() - t0 < 4:
            scenes = store.scenes()  # filtered on the cell rows of its own read
            cells = store.cells()  # read later: a superset
            if not scenes.empty:
                assert set(scenes["cell_id"]) <= set(cells["cell_id"])
            reads += 1
    finally:
        stop.set()
        t.join()
    assert reads > 50 and len(store.cells()) > 10


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

    monkeypatch.setattr(executors.base, "cpu_cores", lambda: 4)
    ex = make_executor("auto", device="cpu", n_cells=10)
    assert isinstance(ex, Pool) and ex.workers == 4 and ex.threads() == 1
    assert make_executor("auto", device="cpu", n_cells=3).workers == 3  # no idle workers
    assert isinstance(make_executor("auto", device="cpu", n_cells=1), InProcess)
    assert isinstance(make_executor("auto", device="cuda"), InProcess)
    assert make_executor("pool", workers=2).threads() == 2
    # one process on CPU leaves a core free (two torch threads stalled 20-30x under load on 2 cores)
    assert make_executor("auto", device="cpu", n_cells=1).threads == 3
    assert make_executor("pool", workers=1).threads == make_executor("inprocess").threads == 3
    assert make_executor("auto", device="cuda").threads == 4
    monkeypatch.setattr(executors.base, "cpu_cores", lambda: 2)
    assert make_executor("auto", device="cpu", n_cells=1).threads == 1
    monkeypatch.setattr(executors.base, "cpu_cores", lambda: 1)
    assert make_executor("inprocess").threads == 1
    with pytest.raises(BenchError, match="unknown executor 'threads'; valid: auto"):
        make_executor("threads")


# ------------------------------------------------------------------ cells, streams and the protocol
class LabelledDataset(TinyDataset):
    """TinyDataset whose scenes carry diagnostics, or whose labels are all ignore."""

    def __init__(self, ignore: bool = False):
        super().__init__(0.0)
        self.name, self.ignore = ("tiny-ignore" if ignore else "tiny-diag"), ignore

    def load(self, name, with_views=True):
        s = super().load(name, with_views)
        if self.ignore:
            s.label[:] = -1
        s.diagnostics = {"depth_agreement": 0.75, "n_views_used": 3}
        return s


DATASETS.register("tiny-diag", description="test dataset with diagnostics")(lambda **kw: LabelledDataset(False))
DATASETS.register("tiny-ignore", description="test dataset, every label ignore")(lambda **kw: LabelledDataset(True))


@dataclass
class ProbeConfig(MethodConfig):
    episodic: bool = False
    same_output: bool = True  # set last_output (a constant prediction of class 1)


@METHODS.register("probe", config=ProbeConfig)
class Probe(Method):
    """test method: records the protocol's calls; its adapting forward predicts class 1 everywhere"""

    needs = Needs(source_scenes=2)
    calls: list = []

    def prepare(self, source):
        Probe.calls.append(("prepare", len(source), [s.index for s in source]))

    def adapt(self, inp):
        Probe.calls.append(("adapt", inp.index))
        if self.cfg.same_output:
            out = torch.zeros(inp.batch.coord.shape[0], 12)
            out[:, 1] = 1.0
            self.last_output = out
        return 0


STREAM_GRID = """
name = "stream"
streams = [{ source = "tiny-a", target = [{ dataset = "tiny-b", scenes = 2 },
                                         { dataset = "tiny-diag", split = "val", scenes = 1 }] }]
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
train_scenes = 2
val_scenes = 0
[train]
epochs = 1
[[methods]]
name = "source"
[[methods]]
name = "probe"
predict = ["after", "same"]
same_output = [true, false]
"""


def test_stream_segments_prepare_and_predict(tmp_path):
    p = tmp_path / "stream.toml"
    p.write_text(STREAM_GRID)
    g = load_grid(str(p))
    assert len(g.cells) == 5
    Probe.calls.clear()
    run_grid(g, tmp_path / "out")
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet").set_index("label")
    scenes = pd.read_parquet(tmp_path / "out" / "scenes.parquet")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    assert set(cells["target"]) == {"tiny-b>tiny-diag"} and (cells["n_segments"] == 2).all()
    src = scenes[scenes["cell_id"] == cells.loc["source", "cell_id"]].sort_values("index")
    assert src["index"].tolist() == [0, 1, 2] and src["segment"].tolist() == [0, 0, 1]
    assert src["dataset"].tolist() == ["tiny-b", "tiny-b", "tiny-diag"] and src["split"].tolist()[-1] == "val"
    # the scene's diagnostics become columns of its row
    assert src["depth_agreement"].tolist()[-1] == 0.75 and np.isnan(src["depth_agreement"].tolist()[0])
    # prepare gets needs.source_scenes clean source scenes once per cell, before the stream
    preps = [c for c in Probe.calls if c[0] == "prepare"]
    assert len(preps) == 4 and all(c[1] == 2 for c in preps)
    assert [c[1] for c in Probe.calls[1:4]] == [0, 1, 2]
    # predict = "same" reports the adapting forward's logits (class 1 everywhere); without them, a forward
    probe = scenes[scenes["cell_id"].isin(cells.loc["probe", "cell_id"])].merge(
        pd.read_parquet(tmp_path / "out" / "cells.parquet")[["cell_id", "predict", "params"]], on="cell_id")
    same = probe[(probe["predict"] == "same") & probe["params"].str.contains("true")]
    assert (same["predicted_by"] == "same").all() and (same["acc"] < 1).all()
    assert (probe[probe["predict"] == "after"]["predicted_by"] == "after").all()
    assert (probe[probe["params"].str.contains("false")]["predicted_by"] == "after").all()
    rows = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    assert set(rows["predict"]) == {"after", "same"} and set(rows["role"]) == {"baseline", "method"}


def test_all_ignore_target_is_an_error_not_nan(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(GRID.replace('datasets = ["tiny-a", "tiny-b"]\npairs = "all"', 'pairs = ["tiny-a->tiny-ignore"]'))
    run_grid(load_grid(str(p)), tmp_path / "out", only=["method=source"])
    row = pd.read_parquet(tmp_path / "out" / "cells.parquet").iloc[0]
    assert row["status"] == "error"
    assert "tiny-ignore" in row["error"] and "test_0" in row["error"] and "no point is labelled" in row["error"]


def test_cell_round_trips_through_plain_data_and_has_one_model_key(grid_file):
    from bench.spec import Cell

    for c in load_grid(str(grid_file)).cells:
        back = Cell.from_dict(json.loads(json.dumps(c.to_dict())))
        assert back == c and back.cell_id == c.cell_id and back.model_key() == c.model_key()
    a, b = load_grid(str(grid_file)).cells[:2]
    assert a.model_key() == b.model_key()  # source and bn_adapt on one pair share the source model


def test_checkpoint_file_is_named_by_the_model_key(tmp_path, grid_file):
    from bench.cache import cache_dir

    g = load_grid(str(grid_file), {"only": ["method=source", "target=tiny-a", "source=tiny-a"]})
    run_grid(g, tmp_path / "out")
    assert (cache_dir() / "checkpoints" / f"{g.cells[0].model_key()}.pt").is_file()


def test_every_problem_is_reported_at_once(tmp_path):
    bad = (GRID.replace("prior = [0.0, 0.5]", 'prior = "high"').replace("test_scenes = 2", "test_scenes = -3")
           .replace("seeds = [0]", "seeds = [0]\nbogus = 1"))
    p = tmp_path / "bad.toml"
    p.write_text(bad)
    with pytest.raises(BenchError) as e:
        load_grid(str(p))
    msg = str(e.value)
    assert str(p) in msg and "3 problems" in msg
    assert "unknown key(s) bogus" in msg and "test_scenes = -3 must be >= 1" in msg
    assert "method 'bn_adapt'" in msg and "parameter 'prior' = 'high'" in msg and "expected float" in msg


def test_steps_of_the_wrong_type_name_file_method_and_parameter(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(GRID + '[[methods]]\nname = "tent"\nsteps = "five"\n')
    with pytest.raises(BenchError, match=r"g\.toml: method 'tent'.*parameter 'steps' = 'five'.*expected int"):
        load_grid(str(p))


def test_overrides_are_applied_while_loading(tmp_path, grid_file):
    from bench.grid import Overrides

    g = load_grid(str(grid_file), Overrides(only=["method=bn_adapt", "prior=0.5"],
                                            data_roots={"tiny-a": str(tmp_path)}))
    assert len(g.cells) == 4 and all(c.params["prior"] == 0.5 for c in g.cells)
    assert all(c.data_options["tiny-a"]["root"] == str(tmp_path) for c in g.cells)
    assert len(load_grid(str(grid_file), Overrides(only=["prior=0.5"])).cells) == 4  # cells without it: no match
    with pytest.raises(BenchError, match="unknown key 'priorr'"):
        load_grid(str(grid_file), Overrides(only=["priorr=0.5"]))
    with pytest.raises(BenchError, match="matches none of the grid's 12 cells"):
        load_grid(str(grid_file), Overrides(only=["method=tent"]))
    with pytest.raises(BenchError, match="no cell of this grid uses teacher 'dinov2'"):
        load_grid(str(grid_file), Overrides(teacher_weights={"dinov2": "random-init"}))
    with pytest.raises(BenchError, match="no cell of this grid reads dataset 'scannet'"):
        load_grid(str(grid_file), Overrides(data_roots={"scannet": str(tmp_path)}))


def test_reference_folder_is_never_resumed_by_a_plain_run(tmp_path, grid_file):
    g = load_grid(str(grid_file), {"only": ["method=source", "target=tiny-a", "source=tiny-a"]})
    ref = tmp_path / "ref"
    run_grid(g, ref, reference=True)
    assert (ref / "REFERENCE").is_file() and not (ref / ".lock").exists()
    with pytest.raises(BenchError, match="holds reference results.*--reference"):
        run_grid(g, ref)
    assert run_grid(g, ref, reference=True)["ran"] == 0  # a reference run may resume its own folder
    mode = (ref / "cells.parquet").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


class WideDataset(TinyDataset):
    """tiny-a's scenes, but the dataset labels a third class (ceiling) that tiny-a does not."""

    def __init__(self, **_):
        super().__init__(0.15)
        self.name, self.classes = "tiny-wide", (0, 1, 2)

    def fingerprint(self):
        return {"dataset": self.name}


DATASETS.register("tiny-wide", description="test dataset with a class tiny-a lacks")(lambda **kw: WideDataset())


def test_oracle_is_scored_on_the_classes_of_its_pair(tmp_path):
    """Oracle - Source-Only must compare one class set: the classes the pair's source and target share,
    even though the Oracle's own model is trained on the target and knows all of the target's classes."""
    text = (GRID.replace('datasets = ["tiny-a", "tiny-b"]', 'datasets = ["tiny-a", "tiny-wide"]')
            .replace('pairs = "all"', 'pairs = [["tiny-a", "tiny-wide"]]')
            + '[[methods]]\nname = "source"\ntrain_on = "target"\nlabel = "Oracle"\n')
    p = tmp_path / "g.toml"
    p.write_text(text)
    run_grid(load_grid(str(p)), tmp_path / "out", only=["method=source"])
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet").set_index("label")
    assert set(cells.index) == {"Source-Only", "Oracle"}
    assert cells.loc["Oracle", "eval_classes"] == cells.loc["Source-Only", "eval_classes"] == "wall,floor"


def test_resume_reruns_cells_whose_data_changed(tmp_path, grid_file, monkeypatch):
    """A run folder resumed after the data changed (e.g. a new world version) re-runs the affected cells
    instead of counting their old rows as finished; unaffected cells stay finished."""
    g = load_grid(str(grid_file))
    out = tmp_path / "res"
    run_grid(g, out, only=["method=source"])
    before = pd.read_parquet(out / "cells.parquet").set_index("cell_id")
    assert before["data_key"].str.len().eq(16).all()
    assert run_grid(g, out, only=["method=source"])["ran"] == 0
    # tiny-b's data changes (its fingerprint says so): the cells that read tiny-b run again
    monkeypatch.setattr(TinyDataset, "fingerprint",
                        lambda self: {"dataset": self.name, **({"version": 2} if self.name == "tiny0.15" else {})})
    r = run_grid(g, out, only=["method=source"])
    cells = load_grid(str(grid_file)).cells
    reads_b = [c for c in select_cells(cells) if "tiny-b" in (c.source, c.training_data(), c.stream[0].dataset)]
    assert r["ran"] == len(reads_b) == 3
    after = pd.read_parquet(out / "cells.parquet").set_index("cell_id")
    assert after.index.is_unique and len(after) == len(before)
    changed = after.index[after["data_key"] != before.loc[after.index, "data_key"]]
    assert set(changed) == {c.cell_id for c in reads_b}
    # rows written before rows carried a data key are not trusted either
    legacy = after.reset_index()
    legacy["data_key"] = None
    legacy.to_parquet(out / "cells.parquet", index=False)
    assert run_grid(g, out, only=["method=source"])["ran"] == 4


def select_cells(cells):
    return [c for c in cells if c.method == "source"]


def test_rows_that_differ_only_in_a_cell_setting_stay_apart():
    """A grid that crosses TTT-KD with the number of lifted views (tests/grids/views.toml), a cell setting
    rather than a method parameter: each setting gets its own row params, so the report keeps the rows
    apart (it merged them)."""
    from bench.cell import row_params

    cells = [c for c in load_grid(str(Path(__file__).parent / "grids" / "views.toml")).cells if c.method == "ttt_kd"]
    rows = {json.dumps(row_params(c), sort_keys=True) for c in cells}
    views = {json.loads(r).get("views") for r in rows}
    # synthetic scenes have 10 views, so views = "all" is views = 10: one cell (bench.grid drops the later one)
    assert len(rows) == 3 and views == {1, 2, 10}


# ------------------------------------------------------------------ issue 29: messages, settings, status
def _console():
    import io

    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=200), buf


def test_train_scenes_zero_is_named_once(tmp_path):
    """train_scenes = 0 is one line that names the setting (it was 12 lines of 'no scenes to read')."""
    p = tmp_path / "g.toml"
    p.write_text(SYNTH_GRID.replace("train_scenes = 1", "train_scenes = 0"))
    with pytest.raises(BenchError) as e:
        run_grid(load_grid(str(p)), tmp_path / "out")
    text = str(e.value)
    assert text.count("train_scenes = 0") == 1 and "set train_scenes = N >= 1" in text, text
    assert "problems" not in text and "(3 cells," in text and not (tmp_path / "out").exists()


def test_errors_are_shown_whole_and_rows_named_as_in_reports(tmp_path, monkeypatch, caplog):
    """A cell's error reaches the log and the summary whole (it was cut at 80 and 60 characters), the
    summary says where every error is kept, and rows are named as the reports name them."""
    long = "boom " + "x" * 120 + " THE USEFUL END"
    monkeypatch.setattr(Flaky, "adapt", lambda self, inp: (_ for _ in ()).throw(RuntimeError(long)))
    p = tmp_path / "g.toml"
    p.write_text(GRID + '[[methods]]\nname = "flaky"\nlabel = "Flaky"\nfail_on = "x"\n')
    console, buf = _console()
    caplog.set_level("INFO")
    run_grid(load_grid(str(p)), tmp_path / "out", only=["target=tiny-a", "source=tiny-a"], console=console)
    shown = " ".join((buf.getvalue() + caplog.text).split())
    assert shown.count("THE USEFUL END") == 2  # the log line and the summary
    assert "Flaky (fail_on=x) spunet tiny-a->tiny-a s0: error: RuntimeError: boom" in shown
    assert f"column 'error' of {tmp_path / 'out' / 'cells.csv'}" in shown
    assert "BN-Adapt (prior=0.5)" in shown and "BN-Adapt(prior" not in shown


def test_a_folder_holds_one_setting_of_each_grid_key(tmp_path, grid_file):
    """Cells of another scene count or [train] are refused with the keys and values that differ (they
    used to be mixed in and crash the report), nothing written; new methods, parameters and seeds may
    join; --beside writes the other settings into a folder of their own, the same one every time."""
    out = tmp_path / "res"
    run_grid(load_grid(str(grid_file)), out, only=["method=source"])
    before = {f: (out / f).read_bytes() for f in ("cells.parquet", "scenes.parquet", "config.toml")}
    assert json.loads(pd.read_parquet(out / "cells.parquet")["config"].iloc[0])["test_scenes"] == 2
    edited = tmp_path / "edited.toml"
    edited.write_text(GRID.replace("test_scenes = 2", "test_scenes = 3").replace("epochs = 1", "epochs = 2"))
    with pytest.raises(BenchError) as e:
        run_grid(load_grid(str(edited)), out, only=["method=source"])
    text = str(e.value)
    assert "test_scenes = 2 there, 3 now" in text and 'train_cfg = {"epochs": 1} there, {"epochs": 2} now' in text
    assert "--beside" in text and "train_scenes" not in text
    assert {f: (out / f).read_bytes() for f in before} == before
    # a grown grid (another parameter value, a new method) may join the folder
    grown = tmp_path / "grown.toml"
    grown.write_text(GRID.replace("prior = [0.0, 0.5]", "prior = [0.0, 0.5, 0.9]"))
    assert run_grid(load_grid(str(grown)), out, only=["method=bn_adapt"])["ran"] == 12
    assert (out / "config-1.toml").read_text() == before["config.toml"].decode()  # the first grid file is kept
    # beside: the same folder for the same settings, reported apart
    r = run_grid(load_grid(str(edited)), out, only=["method=source", "target=tiny-a"], beside=True)
    assert r["out"].parent == out.parent and r["out"].name.startswith("res+") and r["ran"] == 2
    assert run_grid(load_grid(str(edited)), out, only=["method=source"], beside=True)["out"] == r["out"]
    assert len(ResultsStore(out).cells()) == 16 and len(ResultsStore(r["out"]).cells()) == 4


def test_legacy_rows_without_config_are_compared_by_their_columns(tmp_path, grid_file):
    out = tmp_path / "res"
    run_grid(load_grid(str(grid_file)), out, only=["method=source"])
    df = pd.read_parquet(out / "cells.parquet").drop(columns=["config"])
    df.to_parquet(out / "cells.parquet", index=False)
    edited = tmp_path / "edited.toml"
    edited.write_text(GRID.replace("train_scenes = 2", "train_scenes = 1"))
    with pytest.raises(BenchError, match="train_scenes = 2 there, 1 now"):
        run_grid(load_grid(str(edited)), out, only=["method=source"])


def test_status_of_a_finished_run(tmp_path, grid_file):
    from bench.runner import run_status

    out = tmp_path / "res"
    p = tmp_path / "g.toml"
    p.write_text(GRID + '[[methods]]\nname = "flaky"\nlabel = "Flaky"\nfail_on = "tiny-a"\n')
    os.environ["FLAKY_TARGET"] = "tiny-a"
    try:
        run_grid(load_grid(str(p)), out, only=["target=tiny-a"])
    finally:
        del os.environ["FLAKY_TARGET"]
    text = run_status(out)
    assert f"{out}: 8 cells recorded, 6 ok, 2 errors" in text and "cells: 8 of 8 done, 2 errors, 0 left" in text
    assert "ended" in text and text.count("error: Flaky") == 2 and "RuntimeError: boom" in text
    with pytest.raises(BenchError, match="no such run folder"):
        run_status(tmp_path / "nope")


def test_scene_rows_count_the_points_predicted_as_source_only(tmp_path, grid_file):
    """``n_same_source`` (read by the report's inert rule): every scored point for Source-Only itself, fewer
    for a BN-Adapt row that moves predictions, never more than the scored points (the confusion's total)."""
    out = tmp_path / "res"
    run_grid(load_grid(str(grid_file)), out, only=["method=source,bn_adapt", "source=tiny-a", "target=tiny-b"])
    cells = pd.read_parquet(out / "cells.parquet").set_index("cell_id")
    scenes = pd.read_parquet(out / "scenes.parquet")
    scored = scenes["conf"].map(lambda c: int(np.sum(c)))
    assert (scenes["n_same_source"] <= scored).all()
    label = scenes["cell_id"].map(cells["label"])
    src = label == "Source-Only"
    assert src.any() and (scenes.loc[src, "n_same_source"] == scored[src]).all()
    bn = label.str.startswith("BN-Adapt") & (scenes["cell_id"].map(cells["params"]).str.contains("0.0"))
    assert bn.any() and (scenes.loc[bn, "n_same_source"] < scored[bn]).any()
