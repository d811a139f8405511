"""Bad command-line and grid input: one clear message before any work, exit status 2, nothing written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import cli_inprocess
import numpy as np
import pytest

from bench.errors import BenchError
from bench.grid import Overrides, load_grid
from bench.only import same_value
from methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
GRIDS = Path(__file__).parent / "grids"  # fixture grids (tests/grids/README.md)
CLI_GRID = str(GRIDS / "cli.toml")
CLI = (GRIDS / "cli.toml").read_text()


def bench(*args, cwd=None):
    """``python -m bench ARGS``: in this process (``bench.cli.main``), or, given another working folder
    ``cwd``, as a subprocess of this checkout with its output piped as in a script."""
    if cwd is None:
        return cli_inprocess.bench(*args)
    return bench_process(*args, cwd=cwd)


def bench_process(*args, cwd=None):
    """``python -m bench`` of this checkout as its own process (also from another working folder), output piped."""
    env = {**os.environ, "TTT_BENCH_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          env=env, timeout=600)


def refused(r, *messages):
    """Exit 2, each message in stderr (line wrapping undone), no traceback."""
    text = " ".join(r.stderr.split())
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for m in messages:
        assert m in text, (m, text)
    return text


def _grid(tmp_path, text, name="g.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# 1 -- devices this machine does not have
def test_a_missing_cuda_device_is_one_message_before_the_run(tmp_path):
    out = tmp_path / "out"
    r = bench("run", "--grid", CLI_GRID, "--device", "cuda:99", "--out", str(out))
    text = refused(r, "device 'cuda:99'", "--device cpu")
    assert text.count("cuda:99") == 1 and " problems" not in text and not out.exists()


def test_check_device_without_cuda(monkeypatch):
    import torch

    from bench.spec import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("cpu") == "cpu"
    with pytest.raises(BenchError, match=r"device 'cuda' is not available on this machine .*--device cpu \(or "
                                         r"device = \"cpu\" in the grid\)"):
        check_device("cuda")
    with pytest.raises(BenchError, match=r"--device 'gpu' must be 'cpu', 'cuda' or 'cuda:N'"):
        check_device("gpu", "--device")


@pytest.mark.parametrize("device, message", [("tpu", "--device 'tpu' must be 'cpu', 'cuda' or 'cuda:N'"),
                                             ("cuda:99", "--device 'cuda:99'")])
def test_profile_refuses_a_device_it_cannot_use(device, message):
    refused(bench("profile", "--device", device, "--repeats", "1", "--no-breakdown"), message)


def test_profile_refuses_a_voxel_size_that_is_not_positive():
    refused(bench("profile", "--voxel-size", "0", "--repeats", "1", "--no-breakdown"),
            "--voxel-size 0.0: give a positive size in metres")


# 2 -- a grid-level problem is reported once, not once per method table
@pytest.mark.parametrize("change, message", [
    (("epochs = 6", "epoch = 6"), "[train] has no parameter 'epoch'"),
    (("channels = [16, 24, 32]", "chanels = 3"), "backbone 'spunet' has no parameter 'chanels'"),
    (('device = "cpu"', 'device = "gpu"'), "device = 'gpu' must be 'cpu', 'cuda' or 'cuda:N'"),
    (("[train]", "[data_options.synth-s3dis]\nsed = 1\n\n[train]"),
     "[data_options.synth-s3dis]: dataset 'synth-s3dis' has no parameter 'sed'"),
])
def test_grid_level_problems_are_reported_once(tmp_path, change, message):
    p = _grid(tmp_path, CLI.replace(*change))
    with pytest.raises(BenchError) as e:
        load_grid(str(p))
    msg = str(e.value)
    assert message in msg and msg.count(message) == 1 and " problems:" not in msg and "methods[" not in msg, msg


def test_device_override_typo_is_reported_once():
    text = refused(bench("run", "--grid", CLI_GRID, "--device", "gpu", "--dry-run"),
                   "--device 'gpu' must be 'cpu', 'cuda' or 'cuda:N'")
    assert text.count("'gpu'") == 1 and " problems" not in text


# 3 -- a Hugging Face snapshot folder is accepted as teacher weights
def test_teacher_weights_may_be_a_folder(tmp_path):
    from teachers.synth2d import WEIGHTS, Synth2DConfig

    g = load_grid(CLI_GRID, Overrides(teacher_weights={"synth2d": str(tmp_path)}, only=["method=ttt_kd"]))
    assert g.cells[0].teacher["weights"] == str(tmp_path)
    with pytest.raises(BenchError, match=f"folder {tmp_path} holds no synth2d.pt"):
        Synth2DConfig(weights=str(tmp_path)).weights_file()
    (tmp_path / "synth2d.pt").symlink_to(WEIGHTS)
    assert Synth2DConfig(weights=str(tmp_path)).weights_file() == tmp_path / "synth2d.pt"
    with pytest.raises(BenchError, match="synth2d=/nonexistent: no such file or folder"):
        load_grid(CLI_GRID, Overrides(teacher_weights={"synth2d": "/nonexistent"}))


# 4, 5 -- --only compares numbers as numbers and knows every cell setting
def test_only_compares_numbers_numerically_and_lists_the_values_present():
    grid = str(GRIDS / "filters.toml")
    text = load_grid(grid, Overrides(only=["lr=0.0001"])).cells
    numeric = load_grid(grid, Overrides(only=["lr=1e-4"])).cells
    assert len(numeric) == 2 and [c.cell_id for c in numeric] == [c.cell_id for c in text]
    # 10 cells less the Oracle on the diagonal (reported from the Source-Only cell, bench.grid); the
    # Source-Only rows' lr is their method's default
    default = METHODS.get("source").config().lr
    values = ", ".join(f"{v:g}" for v in sorted({1e-4, 1e-3, 2.5e-4, default}))
    with pytest.raises(BenchError, match=r"--only lr=1e-7 matches none of the grid's 9 cells: lr is one of "
                                         + re.escape(values)):
        load_grid(grid, Overrides(only=["lr=1e-7"]))
    with pytest.raises(BenchError, match=r"method is one of source, tent, ttt_kd"):
        load_grid(grid, Overrides(only=["method=tnet"]))
    assert same_value(True, "true") and same_value(False, "0") and not same_value(True, "false")
    assert same_value(3, "3.0") and same_value(1e-4, "0.0001") and not same_value(3, "three")
    assert same_value("all", "all") and same_value(None, "none") and not same_value("1e-4", "0.0001")


def test_only_accepts_every_cell_setting_a_grid_varies():
    grid = str(GRIDS / "stream.toml")
    g = load_grid(grid, Overrides(only=["reset_every=2"]))  # one row, 2 seeds
    assert len(g.cells) == 2 and all(c.protocol.reset_every == 2 for c in g.cells)
    assert len(load_grid(grid, Overrides(only=["probe_every=3", "order=sequential"])).cells) == 6
    assert len(load_grid(grid, Overrides(only=["method=tent", "reset_every=0", "seed=0"])).cells) == 1
    with pytest.raises(BenchError, match=r"unknown key 'reset_evry' \(did you mean 'reset_every'\?\)"):
        load_grid(grid, Overrides(only=["reset_evry=6"]))


# 6 -- a file where a folder belongs
def test_out_or_cache_dir_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep")
    refused(bench("run", "--grid", CLI_GRID, "--only", "method=source", "--out", str(f)),
            f"{f} is a file, not a folder")
    refused(bench("--cache-dir", str(f), "run", "--grid", CLI_GRID, "--dry-run"),
            f"cache folder {f} (--cache-dir): {f} is a file, not a folder")
    assert f.read_text() == "keep"


# 7 -- show has --data-root, and its help names the file it writes
def test_show_takes_a_data_root(tmp_path):
    scene = tmp_path / "scannet" / "val" / "scene0002_00"
    scene.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(scene / "coord.npy", rng.uniform(-1, 1, (200, 3)).astype(np.float32))
    np.save(scene / "color.npy", rng.integers(0, 255, (200, 3), dtype=np.uint8))
    np.save(scene / "normal.npy", np.tile([0, 0, 1], (200, 1)).astype(np.float32))
    np.save(scene / "segment20.npy", np.resize(np.array([0, 4, 12], np.int16), 200))
    r = bench("show", "scannet/val/scene0002_00", "--data-root", f"scannet={tmp_path / 'scannet'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png = tmp_path / "runs" / "show" / "scannet_val_scene0002_00.png"  # git ignores runs/
    assert png.stat().st_size > 5000 and str(png) in " ".join(r.stdout.split())
    refused(bench("show", "scannet/val/scene0002_00", "--data-root", f"s3dis={tmp_path}"),
            "the scene is from dataset 'scannet', not 's3dis'")
    assert "runs/show/DATASET_SCENE.png" in " ".join(bench("show", "--help").stdout.split())


def test_world_refuses_a_real_dataset_before_measuring():
    refused(bench("world", "--domains", "scannet"), "'scannet' is not a synthetic domain", "synth-scannet")


# 8 -- output piped into a file is neither wrapped nor cut
def test_piped_output_is_not_wrapped_or_truncated():
    r = bench_process("run", "--grid", str(GRIDS / "stream.toml"), "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 7 and lines[-1] == "6 cells"  # 3 rows x 2 seeds
    assert all("synth-scannet->synth-s3dis>synth-matterport>synth-scannet" in line for line in lines[:-1])
    ref = str(ROOT / "results" / "reference" / "continual")
    r = bench_process("compare", ref, ref)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and "synth-scannet → synth-s3dis>synth-matterport>synth-scannet" in r.stdout


# 9 -- report says where it looked, and finds the references as compare does
def test_report_without_results_says_where_it_looked(tmp_path):
    refused(bench("report", "--grid", "smoke", cwd=tmp_path), "no results (cells.parquet) in runs/smoke",
            str(ROOT / "results" / "reference" / "smoke"), "python -m bench run --grid smoke")
    refused(bench("report", "--grid", "smok", cwd=tmp_path), "no grid 'smok' (grids: ")


def test_report_finds_the_package_references_from_another_folder(tmp_path, monkeypatch):
    from bench.cli import _results_folder

    monkeypatch.chdir(tmp_path)
    assert _results_folder("id_ood") == ROOT / "results" / "reference" / "id_ood"


# 10 -- test_scenes = 0 means "every scene" only for real datasets
def test_zero_test_scenes_on_a_synthetic_dataset_is_refused_at_load(tmp_path):
    with pytest.raises(BenchError) as e:
        load_grid(str(_grid(tmp_path, CLI.replace("test_scenes = 3", "test_scenes = 0"))))
    msg = str(e.value)
    assert msg.count("test_scenes = 0") == 1 and "synth-scannet, synth-s3dis" in msg and "set test_scenes = N" in msg
    stream = CLI.replace('pairs = ["synth-scannet->synth-scannet", "synth-scannet->synth-s3dis"]', "pairs = []")
    stream += '\n[[streams]]\nsource = "synth-scannet"\ntarget = [{ dataset = "synth-s3dis", scenes = 0 }]\n'

    with pytest.raises(BenchError, match=r"segment 1 \(synth-s3dis\) has scenes = 0"):
        load_grid(str(_grid(tmp_path, stream, "s.toml")))


# 11 -- world checks its inputs first and writes to runs/world by default
def test_world_checks_results_before_measuring(tmp_path, monkeypatch):
    import bench.world as world
    from bench.cli import _parser

    def measured(*a, **k):
        raise AssertionError("measured before the inputs were checked")

    monkeypatch.setattr(world, "measure_domain", measured)
    with pytest.raises(BenchError, match="--results /nonexistent: no cells.csv"):
        world.run_world(["synth-val"], 2, tmp_path / "out", Path("/nonexistent"))
    assert not (tmp_path / "out").exists()
    assert _parser().parse_args(["world"]).out == Path("runs/world")


# 12 -- issue 29: options that would be silently ignored, --only alternatives, lr = inf
def test_address_without_ray_is_refused():
    for cmd in (["run", "--grid", CLI_GRID, "--dry-run"], ["select", "--dry-run"]):
        refused(bench(*cmd, "--address", "auto"), "--address auto names a Ray cluster, which only --executor ray uses",
                "add --executor ray")


def test_only_filters_on_one_key_are_alternatives():
    def methods(only):
        return sorted({c.method for c in load_grid(CLI_GRID, Overrides(only=only)).cells})

    assert methods(["method=tent,bn_adapt"]) == methods(["method=tent", "method=bn_adapt"]) == ["bn_adapt", "tent"]
    assert len(load_grid(CLI_GRID, Overrides(only=["method=tent,bn_adapt", "target=synth-s3dis"])).cells) == 2
    with pytest.raises(BenchError, match=r"matches none of the grid's 8 cells: target is one of synth-s3dis, "
                                         r"synth-scannet among the cells that match method=tent"):
        load_grid(CLI_GRID, Overrides(only=["method=tent", "target=nope"]))


def test_infinite_learning_rate_is_refused(tmp_path):
    p = _grid(tmp_path, CLI.replace('name = "tent"\nlabel = "TENT"', 'name = "tent"\nlabel = "TENT"\nlr = inf'))
    refused(bench("run", "--grid", str(p), "--dry-run"), "parameter 'lr' = inf must be a finite number, > 0")
