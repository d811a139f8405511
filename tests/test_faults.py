"""Fault injection: what a user's disk, a crash or a hand edit does to a small run, and what comes out.

Each kind of cached and result file is truncated, corrupted or altered; the driver and a worker are
killed; a small disk is filled where the machine allows mounting one. Every case ends in one of:
detected and regenerated (scenes, teacher features, checkpoints: the same content as before), or
refused with one message naming the file and the fix (results tables, a full or unwritable disk);
and never with a finished cell lost or doubled.

The module uses a cache folder of its own (the session's shared cache is never damaged).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cache import cache_dir, set_cache_dir
from bench.errors import BenchError
from bench.grid import load_grid
from bench.runner import run_grid
from bench.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent

GRID = """
name = "faults"
pairs = ["synth-scannet->synth-scannet"]
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.1 }]
teachers = ["synth2d"]
seeds = [0]
train_scenes = 1
val_scenes = 0
test_scenes = 2
selected = "none"
[train]
epochs = 1
[[methods]]
name = "source"
label = "Source-Only"
[[methods]]
name = "bn_adapt"
label = "BN-Adapt"
[[methods]]
name = "tent"
label = "TENT"
lr = [0.001, 0.0001]
steps = 1
"""
N_CELLS, N_SCENES = 4, 2


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder for this module alone, restored afterwards."""
    before, env = cache_dir(), os.environ.get("TTT_BENCH_CACHE")
    root = tmp_path_factory.mktemp("fault-cache")
    os.environ["TTT_BENCH_CACHE"] = str(root)
    set_cache_dir(root)
    yield root
    set_cache_dir(before)
    if env is None:
        os.environ.pop("TTT_BENCH_CACHE", None)
    else:
        os.environ["TTT_BENCH_CACHE"] = env


@pytest.fixture
def grid_file(tmp_path):
    p = tmp_path / "faults.toml"
    p.write_text(GRID)
    return p


def bench(*args, cache: Path, wait: bool = True, **kw):
    env = {**os.environ, "TTT_BENCH_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT), "TTT_BENCH_CACHE": str(cache),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                **kw)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def refused(r, *messages):
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in text, text
    for m in messages:
        assert m in text, (m, text)
    return text


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------- generated scenes
def _damage_scene(folder: Path, how: str) -> str:
    """Damage a cached scene folder; returns the file the warning must name."""
    if how == "truncate":
        _truncate(folder / "coord.npy")
        return "coord.npy"
    if how == "alter":  # still a valid array of the right shape: only the checksum can tell
        c = np.load(folder / "coord.npy")
        c[:10] += 0.5
        np.save(folder / "coord.npy", c)
        return "coord.npy"
    if how == "alter_view":
        pose = folder / "views" / "00000_pose.txt"
        pose.write_text(pose.read_text().replace("0.", "1.", 1))
        return "views/00000_pose.txt"
    if how == "delete":
        (folder / "segment.npy").unlink()
        return "segment.npy"
    if how == "add":
        (folder / "views" / "00099.png").write_bytes((folder / "views" / "00000.png").read_bytes())
        return "views/00099.png"
    if how == "no_checksum":  # an incomplete scene, or one written before scenes carried checksums
        (folder / "checksums.sha256").unlink()
        return "checksums.sha256"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncate", "alter", "alter_view", "delete", "add", "no_checksum"])
def test_a_damaged_cached_scene_is_regenerated(cache, how, caplog):
    """A cached scene that was truncated, altered (still readable: it used to change mIoU silently),
    lost a file or gained one, is regenerated on its next read, with a warning naming the file; the
    regenerated scene is the scene it was."""
    from bench.data import get_dataset
    from bench.data.scene import verify_checksums

    ds = get_dataset("synth-scannet")
    ds.ensure(["test_0001"])
    folder = ds.path("test_0001")
    before = snapshot(folder)
    coord = ds.load("test_0001").coord.copy()
    name = _damage_scene(folder, how)
    assert verify_checksums(folder) is not None
    caplog.set_level(logging.WARNING)
    scene = ds.load("test_0001")
    assert f"{folder / name}" in caplog.text and "regenerating the scene" in caplog.text
    assert np.array_equal(scene.coord, coord) and snapshot(folder) == before
    assert verify_checksums(folder) is None


def test_scene_checksum_file_is_what_sha256sum_checks(cache):
    from bench.data import get_dataset

    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum here")
    ds = get_dataset("synth-scannet")
    ds.ensure(["test_0001"])
    r = subprocess.run(["sha256sum", "--quiet", "-c", "checksums.sha256"], cwd=ds.path("test_0001"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- teacher features
@pytest.mark.parametrize("how", ["truncate", "garbage", "alter", "wrong_scene", "legacy"])
def test_a_damaged_feature_entry_is_recomputed(cache, how, caplog):
    """A teacher-feature entry that is truncated (a crash before: BadZipFile), garbage, altered (valid
    arrays, wrong checksum) or of another scene is recomputed with a warning naming the file; one
    written before entries carried checksums is used and given its checksum."""
    from bench.data import get_dataset
    from teachers import build_teacher
    from teachers.cache import FeatureCache, checksum

    scene = get_dataset("synth-scannet").load("test_0000")
    fc = FeatureCache(build_teacher({"name": "synth2d"}, "cpu"))
    feat, mask = fc.get({"dataset": "x"}, scene)
    path = fc.path({"dataset": "x"}, scene)
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    if how == "truncate":
        _truncate(path)
    elif how == "garbage":
        path.write_bytes(os.urandom(2000))
    elif how == "alter":
        np.savez(path, feat=stored["feat"] * 2, mask=stored["mask"], checksum=stored["checksum"])
    elif how == "wrong_scene":
        f = stored["feat"][:-5]
        np.savez(path, feat=f, mask=stored["mask"][:-5], checksum=np.array(checksum(f, stored["mask"][:-5])))
    elif how == "legacy":
        np.savez(path, feat=stored["feat"], mask=stored["mask"])
    caplog.set_level(logging.WARNING)
    fc2 = FeatureCache(build_teacher({"name": "synth2d"}, "cpu"))
    feat2, mask2 = fc2.get({"dataset": "x"}, scene)
    assert np.array_equal(feat2, feat) and np.array_equal(mask2, mask)
    with np.load(path) as z:
        assert str(z["checksum"]) == str(stored["checksum"])
    if how == "legacy":
        assert (fc2.hits, fc2.misses) == (1, 0) and "recomputing" not in caplog.text
    else:
        assert (fc2.hits, fc2.misses) == (0, 1)
        assert f"teacher feature cache entry {path}" in caplog.text and "recomputing it" in caplog.text


# ----------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("how", ["truncate", "garbage", "alter", "legacy"])
def test_a_damaged_checkpoint_is_retrained(cache, tmp_path, how, caplog):
    """A checkpoint truncated, replaced by garbage or with one weight altered (it loads fine: only the
    checksum can tell) is retrained with a warning naming the file; retraining gives the same weights
    (one thread). One written before checkpoints carried checksums is used and given its checksum."""
    from backbones.checkpoint import get_or_train, state_checksum
    from backbones.model import ModelSpec
    from backbones.train import TrainConfig, train
    from bench.data import get_dataset

    scene = get_dataset("synth-scannet").load("train_0000", with_views=False)
    spec = ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]})
    key = {"model": spec.to_dict(), "recipe": "source", "train": {"epochs": 1}, "data": {"dataset": "x"}, "seed": 0}

    def train_fn(model):
        return train(model, TrainConfig(epochs=1, augment=False), [scene], [], 0, "cpu")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-thread backward sums in another order each time
    try:
        m1, info1 = get_or_train(key, spec, train_fn, "cpu", root=tmp_path)
        path = Path(info1["path"])
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["meta"]["sha256"] == state_checksum(ckpt["state_dict"])
        if how == "truncate":
            _truncate(path)
        elif how == "garbage":
            path.write_bytes(os.urandom(4000))
        elif how == "alter":
            name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
            ckpt["state_dict"][name].view(-1)[0] += 1.0
            torch.save(ckpt, path)
        elif how == "legacy":
            del ckpt["meta"]["sha256"]
            torch.save(ckpt, path)
        caplog.set_level(logging.WARNING)
        m2, info2 = get_or_train(key, spec, train_fn, "cpu", root=tmp_path)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    if how == "legacy":
        assert info2["cache"] == "hit" and "unusable" not in caplog.text
    else:
        assert info2["cache"] == "retrained"
        assert f"checkpoint {path} is unusable" in caplog.text and "retraining" in caplog.text
        if how == "alter":
            assert "differ from their checksum" in caplog.text
    assert "sha256" in torch.load(path, weights_only=True)["meta"]


# ---------------------------------------------------------------------------------- result tables
def _finished(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = ResultsStore(out)
    return store.cells(), store.scenes()


def _complete(out: Path) -> None:
    """Every cell once, ok, with its scene rows once."""
    cells, scenes = _finished(out)
    assert len(cells) == N_CELLS and cells["cell_id"].is_unique and (cells["status"] == "ok").all()
    assert len(scenes) == N_CELLS * N_SCENES and not scenes.duplicated(["cell_id", "scene"]).any()


@pytest.fixture
def finished_run(cache, grid_file, tmp_path):
    out = tmp_path / "run"
    run_grid(load_grid(str(grid_file)), out)
    _complete(out)
    return out


@pytest.mark.parametrize("table", ["cells.parquet", "scenes.parquet"])
def test_a_corrupt_results_table_is_one_message_and_nothing_finished_is_lost(finished_run, grid_file, table,
                                                                             cache):
    """run, report, compare and status refuse a corrupt table with one message naming the file and
    the fix (report and compare raised a raw pyarrow error); the fix, then the same run, brings every
    cell back once (cells whose rows were in the broken table run again)."""
    out = finished_run
    path = out / table
    _truncate(path)
    fix = f"move it away (mv {path} {path}.bad) and run the same command again"
    for args in (["run", "--grid", grid_file, "--out", out], ["report", "--results", out], ["compare", out, out],
                 ["status", out]):
        refused(bench(*args, cache=cache), f"{path}: unreadable results table", fix)
    path.rename(path.with_name(table + ".bad"))
    res = run_grid(load_grid(str(grid_file)), out)
    assert res["ran"] == N_CELLS and res["errors"] == 0
    _complete(out)


def test_a_lost_cell_row_runs_that_cell_again(finished_run, grid_file):
    out = finished_run
    cells = pd.read_parquet(out / "cells.parquet")
    cells.iloc[1:].to_parquet(out / "cells.parquet", index=False)
    assert run_grid(load_grid(str(grid_file)), out)["ran"] == 1
    _complete(out)


def test_unwritable_out_is_one_message(cache, grid_file):
    r = bench("run", "--grid", grid_file, "--out", "/sys/ttt-bench-test/run", cache=cache)
    refused(r, "cannot write /sys/ttt-bench-test", "give --out a folder you can write")


# --------------------------------------------------------------------------- killed processes
def _wait(pred, timeout: float = 600, what: str = "") -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _scenes_ready(cache: Path) -> None:
    """Generate the grid's scenes first, so that the only child processes of a run are its workers."""
    from bench.data import get_dataset

    get_dataset("synth-scannet").ensure(["train_0000", "test_0000", "test_0001"])


def _cpu(pid: int) -> int:
    try:
        return sum(int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
    except (OSError, ValueError):
        return -1


def _rows(out: Path) -> int:
    try:
        return len(ResultsStore(out).cells())
    except BenchError:
        return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        pytest.skip("no /proc children list here")
    return [int(x) for x in text.split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_killed_driver_loses_and_doubles_nothing(cache, grid_file, tmp_path):
    """SIGKILL the driver of a pool run mid-grid: its workers end by themselves, status says the run
    stopped, and the same command finishes the grid with every cell once."""
    from bench.runner import run_status

    out = tmp_path / "run"
    _scenes_ready(cache)
    proc = bench("run", "--grid", grid_file, "--out", out, "--executor", "pool", "--workers", "2", cache=cache,
                 wait=False)
    try:
        _wait(lambda: _rows(out) >= 1 or proc.poll() is not None, what="a first finished cell")
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be killed")
        text = run_status(out)
        assert "running for" in text and f"pid {proc.pid}" in text and "ETA" in text, text
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    # a worker ends when it finds the driver gone, after the job it is at (seconds; more on a loaded machine)
    _wait(lambda: all(_gone(w) for w in workers), 300, "the orphaned workers to end")
    assert "stopped before its end" in run_status(out)
    before = _rows(out)
    r = bench("run", "--grid", grid_file, "--out", out, cache=cache)
    assert r.returncode == 0, r.stdout + r.stderr
    _complete(out)
    assert f"{before} already finished, {N_CELLS - before} to run" in " ".join(r.stderr.split())


def test_killed_worker_is_replaced_and_its_job_retried(cache, grid_file, tmp_path):
    """SIGKILL a pool worker while it works: the driver replaces it, retries its job once, and the
    grid ends with every cell once and ok."""
    out = tmp_path / "run"
    _scenes_ready(cache)
    # TENT cells of 100 steps per scene (seconds each) leave time to kill a worker while it is at work,
    # however fast the machine: a kill that lands on an idle worker after its last job tests nothing
    grid_file.write_text(GRID.replace("steps = 1", "steps = 100"))
    proc = bench("run", "--grid", grid_file, "--out", out, "--executor", "pool", "--workers", "2", cache=cache,
                 wait=False)
    try:
        _wait(lambda: _rows(out) >= 1 or proc.poll() is not None, what="a first finished cell")
        assert proc.poll() is None, proc.communicate()[0]
        workers = _children(proc.pid)
        before = {w: _cpu(w) for w in workers}
        time.sleep(1.5)  # a worker at a TENT cell burns CPU; one waiting for a job does not
        victim = max(workers, key=lambda w: _cpu(w) - before[w])
        assert _cpu(victim) > before[victim], "no worker at work a moment after the first cell"
        os.kill(victim, signal.SIGKILL)
        log, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    shown = " ".join(log.split())  # the console wraps long lines
    assert "killed by SIGKILL" in shown and "retrying it once" in shown, log
    _complete(out)


# ------------------------------------------------------------------------------------ a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, where the machine lets this process mount one (root in a namespace that allows it)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_message_and_finished_cells_stay(cache, grid_file, small_disk):
    """The results disk fills up during a run: one message (no Errno 28 traceback) naming the file and
    the fix; the cells finished before are intact and no half-written file is left; after space is
    freed, the same command finishes the grid with every cell once."""
    out = small_disk / "run"
    r = bench("run", "--grid", grid_file, "--out", out, "--only", "method=source", cache=cache)
    assert r.returncode == 0, r.stdout + r.stderr
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # leave the disk full
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    r = bench("run", "--grid", grid_file, "--out", out, cache=cache)
    refused(r, "No space left on device", "free space there", "run the same command again; finished cells are kept")
    cells, _ = _finished(out)
    assert len(cells) == 1 and cells["status"].eq("ok").all()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    r = bench("run", "--grid", grid_file, "--out", out, cache=cache)
    assert r.returncode == 0, r.stdout + r.stderr
    _complete(out)
