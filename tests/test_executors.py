"""Executors: one training job per model, a killed worker costs only its cell, Ctrl-C stops the workers,
progress from the workers, Ray across nodes that share no disk, and clear errors for Ray addresses.

Worker processes import this module (``$TTT_BENCH_IMPORTS=test_executors``), so the test methods below
exist in them too."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.grid import load_grid
from methods import METHODS
from methods.base import Method, MethodConfig

HERE = Path(__file__).parent
ROOT = HERE.parent
MAIN_PID_VAR = "TTT_TEST_MAIN_PID"  # never SIGKILL this process (the one running pytest)


@dataclass
class KillerConfig(MethodConfig):
    marker: str = ""  # a file that gets one line per attempt
    die_times: int = 0  # SIGKILL its own worker on the first die_times attempts


@METHODS.register("test_killer", config=KillerConfig)
class Killer(Method):
    """test method: SIGKILLs its own worker process (as the OOM killer would) on its first attempts"""

    def adapt(self, inp):
        if self.cfg.marker:
            with open(self.cfg.marker, "a") as f:
                f.write(f"{os.getpid()}\n")
            attempts = len(Path(self.cfg.marker).read_text().splitlines())
            if attempts <= self.cfg.die_times and str(os.getpid()) != os.environ.get(MAIN_PID_VAR):
                os.kill(os.getpid(), signal.SIGKILL)
        return 0


@dataclass
class SleeperConfig(MethodConfig):
    seconds: float = 0.0


@METHODS.register("test_sleeper", config=SleeperConfig)
class Sleeper(Method):
    """test method: sleeps (a cell that would run for minutes)"""

    def adapt(self, inp):
        time.sleep(self.cfg.seconds)
        return 0


def _grid(tmp_path: Path, methods: str, datasets: str = '"synth-scannet"', pairs: str = '"all"') -> Path:
    p = tmp_path / "grid.toml"
    p.write_text(f"""
name = "exec"
datasets = [{datasets}]
pairs = {pairs}
backbones = [{{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }}]
seeds = [0]
train_scenes = 1
val_scenes = 0
test_scenes = 1
[train]
epochs = 2
{methods}
""")
    return p


SOURCE = '[[methods]]\nname = "source"\n'


@pytest.fixture
def worker_imports(monkeypatch):
    """Workers (spawned pool processes, local Ray) import this module and find it on their path."""
    monkeypatch.setenv("TTT_BENCH_IMPORTS", "test_executors")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(MAIN_PID_VAR, str(os.getpid()))


def test_plan_groups_cells_by_model(tmp_path):
    from bench.executors import plan

    g = load_grid(str(_grid(tmp_path, SOURCE + '[[methods]]\nname = "bn_adapt"\nprior = [0.0, 0.5]\n',
                            '"synth-scannet", "synth-s3dis"')))
    models = plan(g.cells)
    assert len(models) == 2 and [m.index for m in models] == [0, 1]
    assert sorted(c.cell_id for m in models for c in m.cells) == sorted(c.cell_id for c in g.cells)
    for m in models:
        assert {c.model_key() for c in m.cells} == {m.key}


def test_inprocess_threads_and_training_progress(tmp_path, caplog):
    import torch

    from bench.executors import InProcess

    g = load_grid(str(_grid(tmp_path, SOURCE + '[[methods]]\nname = "bn_adapt"\n')))
    before = torch.get_num_threads()
    seen = []

    class Spy(InProcess):
        def _execute(self, models, activity):
            for out in super()._execute(models, activity):
                seen.append(torch.get_num_threads())
                yield out

    ex = Spy(threads=1)
    with caplog.at_level(logging.INFO):
        rows = [row for _, (row, _) in ex.run(g.cells)]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert seen == [1, 1] and [r["torch_threads"] for r in rows] == [1, 1]  # set explicitly while cells run
    assert torch.get_num_threads() == before  # and restored
    text = caplog.text
    # the training job reports "model i of n" (from the cache if an earlier test trained it)
    assert "model 1/1:" in text and ("trained in" in text or "found in the checkpoint cache" in text)


def test_progress_reports_from_a_worker_reach_the_activity_log(caplog):
    from bench.progress import Activity, Reporting, progress, set_reporter

    reports = []
    prev = set_reporter(reports.append)
    try:
        with progress() as bar:  # inside a worker: reports instead of a bar, throttled
            assert isinstance(bar, Reporting)
            t = bar.add_task("train spunet/source on x", total=4, info="")
            for e in range(4):
                bar.update(t, advance=1, info=f"epoch {e + 1}/4")
    finally:
        set_reporter(prev)
    assert [r["done"] for r in reports] == [0, 4] and reports[-1]["info"] == "epoch 4/4"  # first and last
    reports.clear()
    with Reporting(reports.append, every=0.0) as bar:
        t = bar.add_task("train spunet/source on x", total=4, info="")
        for e in range(4):
            bar.update(t, advance=1, info=f"epoch {e + 1}/4")
    assert [r["done"] for r in reports] == [0, 1, 2, 3, 4]
    act = Activity(log_every=0.0)
    act.expect("train:0", "model 1/3")
    with caplog.at_level(logging.INFO):
        for r in reports:
            act.update("train:0", {**r, "elapsed": 2.0 * r["done"]})
    assert "model 1/3: train spunet/source on x 0/4" in caplog.text
    assert "ETA" in caplog.text and "4/4 (epoch 4/4)" in caplog.text


@pytest.mark.slow
def test_killed_worker_costs_only_its_cell(tmp_path, worker_imports, caplog):
    """A pool worker SIGKILLed mid-cell: the cell is retried once (and succeeds if the worker survives
    the retry, else becomes an error row with the reason); the other cells finish; each model once."""
    from bench.executors import Pool

    once, always = tmp_path / "once.txt", tmp_path / "always.txt"
    methods = (SOURCE + f'[[methods]]\nname = "test_killer"\nlabel = "once"\nmarker = "{once}"\ndie_times = 1\n'
               f'[[methods]]\nname = "test_killer"\nlabel = "always"\nmarker = "{always}"\ndie_times = 9\n'
               '[[methods]]\nname = "bn_adapt"\n')
    g = load_grid(str(_grid(tmp_path, methods)))
    with caplog.at_level(logging.INFO):
        out = {c.label: row for c, (row, _) in Pool(2).run(g.cells)}
    assert set(out) == {"source", "once", "always", "bn_adapt"}
    assert out["source"]["status"] == out["bn_adapt"]["status"] == out["once"]["status"] == "ok"
    assert out["always"]["status"] == "error"
    assert "killed by SIGKILL" in out["always"]["error"] and "tried 2 times" in out["always"]["error"]
    assert len(once.read_text().splitlines()) == 2 and len(always.read_text().splitlines()) == 2
    assert sum(r.get("checkpoint_cache") in ("miss", "retrained") for r in out.values()) <= 1
    assert "model 1/1:" in caplog.text  # the training job's progress came back from the worker
    assert "retrying it once" in caplog.text


@pytest.mark.slow
def test_ctrl_c_stops_workers_and_keeps_finished_cells(tmp_path, worker_imports):
    """SIGINT to the CLI's `run` with a pool: it exits (code 130, no traceback) without waiting
    for the running cells (each would sleep 10 minutes), its workers are gone, finished rows stay."""
    grid = _grid(tmp_path, SOURCE + '[[methods]]\nname = "test_sleeper"\nseconds = 600.0\n'
                 '[[methods]]\nname = "test_sleeper"\nlabel = "s2"\nseconds = 601.0\n')
    out = tmp_path / "run"
    env = {**os.environ, "TTT_BENCH_NO_PROGRESS": "1", "PYTHONFAULTHANDLER": "1"}
    args = ["run", "--grid", str(grid), "--out", str(out), "--executor", "pool", "--workers", "2"]
    # the command as a user types it; a background job of a non-interactive shell (as CI may start the
    # tests) inherits SIGINT ignored, which Python keeps: give the child the disposition a terminal's has
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    cells = out / "cells.parquet"
    deadline = time.time() + 240
    while time.time() < deadline and not cells.is_file() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)  # both sleepers are running now (the source cell finished first)
    workers = {pid: _cmdline(pid) for pid in _children(proc.pid)}
    assert sum("spawn_main" in cmd for cmd in workers.values()) == 2, workers  # and the resource tracker
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)  # a run that waited for its cells would take 10 minutes
    except subprocess.TimeoutExpired:
        # say where it hangs: SIGABRT makes the faulthandler print every thread's stack
        tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "--ppid", str(proc.pid)],
                              capture_output=True, text=True).stdout
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        pytest.fail(f"no exit within 60 s of SIGINT; children:\n{tree}\nstderr:\n{err[-6000:]}")
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    # the workers are ended before the command exits; multiprocessing's resource tracker ends when it sees
    # the command's pipe close, a moment later
    for pid, cmd in workers.items():
        if "resource_tracker" in cmd:
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
        assert not _alive(pid), f"child {pid} still running after Ctrl-C: {cmd}"
    rows = pd.read_parquet(cells)
    assert list(rows["label"]) == ["source"] and (rows["status"] == "ok").all()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "(gone)"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ----------------------------------------------------------------------------------------------- Ray
def test_ray_address_errors_are_bench_errors(monkeypatch):
    ray = pytest.importorskip("ray")
    from bench.executors import connect_ray

    if ray.is_initialized():
        pytest.skip("a Ray connection is already open in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BenchError, match="no running Ray cluster found.*ray start --head"):
        connect_ray("auto", None)

    def refuse(**kw):
        raise ray.exceptions.AuthenticationError("Token authentication is enabled but Ray couldn't find a token")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(BenchError, match="refused this machine's authentication token.*RAY_AUTH_TOKEN"):
        connect_ray("ray://head:10001", None)

    def timeout(**kw):
        raise ConnectionError("ray client connection timeout")

    monkeypatch.setattr(ray, "init", timeout)
    with pytest.raises(BenchError, match="could not connect to the Ray cluster at ray://head:10001 .*token"):
        connect_ray("ray://head:10001", None)


def test_cli_ray_auto_without_cluster_is_one_message(tmp_path):
    pytest.importorskip("ray")
    grid = _grid(tmp_path, SOURCE)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(grid), "--out", str(tmp_path / "o"),
                        "--executor", "ray", "--address", "auto"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "no running Ray cluster found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "config.toml").exists()  # nothing of the run is written


@pytest.mark.slow
def test_ray_cluster_without_shared_disk(tmp_path, worker_imports):
    """Three simulated nodes (a head without CPUs, two workers) with different cache folders: each model
    is trained once, its checkpoint reaches the other node through Ray's object store, every cell
    finishes, and a cell whose worker is SIGKILLed is retried once, then is an error row."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from bench.executors import Ray, plan

    if ray.is_initialized():
        pytest.skip("a Ray connection is already open in this process")
    always = tmp_path / "always.txt"
    methods = SOURCE + ('[[methods]]\nname = "bn_adapt"\n'
                        f'[[methods]]\nname = "test_killer"\nmarker = "{always}"\ndie_times = 9\n')
    g = load_grid(str(_grid(tmp_path, methods, '"synth-scannet", "synth-s3dis"',
                            '["synth-scannet->synth-scannet", "synth-s3dis->synth-s3dis", '
                            '"synth-scannet->synth-s3dis"]')))
    cells = [c for c in g.cells if c.method != "test_killer" or c.source == c.target == "synth-s3dis"]
    assert len(cells) == 7
    caches = [tmp_path / "node1", tmp_path / "node2"]
    base = {k: os.environ[k] for k in ("PYTHONPATH", "TTT_BENCH_IMPORTS", MAIN_PID_VAR)}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for c in caches:
            cluster.add_node(num_cpus=1, env_vars={**base, "TTT_BENCH_CACHE": str(c)})
        t0 = time.perf_counter()
        ex = Ray(cluster.address, None, "cpu")
        out = {c.cell_id: (c, row) for c, (row, _) in ex.run(cells)}
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    logging.getLogger(__name__).info("simulated 2-node cluster: %d cells in %.1f s", len(cells), seconds)
    assert len(out) == 7
    rows = {c.label + ":" + c.source + ">" + c.target: row for c, row in out.values()}
    err = [r for r in rows.values() if r["status"] != "ok"]
    assert len(err) == 1 and err[0]["method"] == "test_killer" and "died" in err[0]["error"], err
    assert len(always.read_text().splitlines()) == 2  # retried exactly once
    # each model trained exactly once: one training job each, and no cell trained again
    assert sorted(t["model"] for t in ex.trainings) == [0, 1]
    assert all(t["cache"] == "miss" and "error" not in t for t in ex.trainings), ex.trainings
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert sum(r["checkpoint_cache"] == "miss" for r in ok) == 2
    assert sum(r["checkpoint_cache"] == "hit" for r in ok) == len(ok) - 2
    # the cells ran on both nodes, and each node holds the checkpoint of every cell it ran (sent there)
    assert len({w["node"] for w in ex.nodes.values()}) == 2
    assert {Path(w["cache"]) for w in ex.nodes.values()} == set(caches)
    ckpt = {t["model"]: Path(t["path"]).name for t in ex.trainings}
    models = {c.cell_id: m.index for m in plan(cells) for c in m.cells}
    for cid, w in ex.nodes.items():
        assert (Path(w["cache"]) / "checkpoints" / ckpt[models[cid]]).is_file()


def test_transfer_moves_cache_files_and_stays_inside_the_cache(tmp_path):
    from bench.transfer import pack, unpack

    src, dst = tmp_path / "node1", tmp_path / "node2"
    f = src / "checkpoints" / "abc.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"weights")
    files = pack([f], root=src)
    assert files == {"checkpoints/abc.pt": b"weights"}
    assert unpack(files, root=dst) == [dst / "checkpoints" / "abc.pt"]
    assert (dst / "checkpoints" / "abc.pt").read_bytes() == b"weights"
    assert unpack(files, root=dst) == []  # present: kept, not rewritten
    with pytest.raises(BenchError, match="outside the cache folder"):
        unpack({"../evil.pt": b""}, root=dst)
    with pytest.raises(BenchError, match="not inside the cache folder"):
        pack([f], root=dst)


def test_track_reports_each_item_inside_a_worker(monkeypatch):
    from bench.executors import import_plugins
    from bench.progress import Reporting, set_reporter, track

    reports = []
    prev = set_reporter(reports.append)
    monkeypatch.setattr(Reporting.__init__, "__defaults__", (0.0,))  # no throttling: every report
    try:
        assert list(track(["a", "b", "c"], "teacher features")) == ["a", "b", "c"]
    finally:
        set_reporter(prev)
    assert [(r["desc"], r["done"], r["total"]) for r in reports] == [("teacher features", i, 3) for i in range(4)]
    monkeypatch.setenv("TTT_BENCH_IMPORTS", "test_executors, no_such_module_xyz")
    with pytest.raises(BenchError, match="names module 'no_such_module_xyz'.*PYTHONPATH"):
        import_plugins()
