"""The CLI as a user runs it, and the smoke-grid regression against stored values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_inprocess import bench

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = Path(__file__).parent / "smoke_expected.json"
CLI_GRID = Path(__file__).parent / "grids" / "cli.toml"  # a fixture grid (tests/grids/README.md)


def bench_process(*args):
    """``python -m bench`` as its own process, as a user runs it (the smoke run and its rerun)."""
    env = {**os.environ, "TTT_BENCH_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)


def test_list_prints_every_registry():
    r = bench("list")
    assert r.returncode == 0, r.stderr
    for name in ("ttt_kd_online", "spunet", "pointnet2", "joint-kd", "dinov2", "synth2d", "synth-matterport",
                 "scannet", "jitter", "segment20"[:7]):
        assert name in r.stdout, name


@pytest.mark.parametrize("args, message", [
    (["run", "--grid", "nope"], "grid 'nope' not found"),
    (["run", "--grid", CLI_GRID, "--only", "methodtent"], "must be KEY=VALUE"),
    (["report", "--results", "/nonexistent/x"], "no results"),
    (["show", "synth-scannet"], "must be DATASET/SCENE"),
    (["show", "nodata/test_0000"], "unknown dataset 'nodata'"),
    (["show", "synth-scannet/tset_0000"], "has no scene 'tset_0000' (nearest: test_0000"),
    (["run", "--grid", CLI_GRID, "--only", "method=foo"], "matches none of the grid's 8 cells"),
    (["run", "--grid", CLI_GRID, "--teacher-weights", "dinov2=random-init"],
     "no cell of this grid uses teacher 'dinov2'"),
    (["run", "--grid", CLI_GRID, "--teacher-weights", "synth2d=/nonexistent.pth"], "/nonexistent.pth: no such file"),
    (["run", "--grid", CLI_GRID, "--data-root", "scannet"], "must be NAME=PATH"),
    (["compare", "/nonexistent/run"], "no results"),
])
def test_user_errors_are_clear_and_have_no_traceback(args, message):
    r = bench(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_only_matching_nothing_creates_no_folder(tmp_path):
    out = tmp_path / "out"
    r = bench("run", "--grid", CLI_GRID, "--only", "method=foo", "--out", str(out))
    assert r.returncode == 2 and not out.exists()


def test_grid_mistakes_are_reported_before_any_work(tmp_path):
    grid = CLI_GRID.read_text()
    bad = grid.replace("steps = 3", 'steps = "five"').replace("test_scenes = 3", "test_scenes = -3")
    p = tmp_path / "bad.toml"
    p.write_text(bad)
    out = tmp_path / "out"
    r = bench("run", "--grid", str(p), "--out", str(out))
    assert r.returncode == 2 and not out.exists() and "Traceback" not in r.stderr
    text = " ".join(r.stderr.split())
    assert "bad.toml: 2 problems" in text and "test_scenes = -3" in text
    assert "method 'ttt_kd'" in text and "parameter 'steps' = 'five'" in text and "expected int" in text


def test_missing_data_root_is_one_message_before_the_run(tmp_path, monkeypatch):
    grid = tmp_path / "real.toml"
    grid.write_text('pairs = ["scannet->scannet"]\nbackbones = ["spunet"]\n[[methods]]\nname = "source"\n')
    monkeypatch.setenv("TTT_BENCH_DATA_SCANNET", "")
    r = bench("run", "--grid", str(grid), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.count("needs its data root") == 1 and not (tmp_path / "out").exists()


def test_dry_run_lists_cells():
    r = bench("run", "--grid", CLI_GRID, "--dry-run", "--only", "method=ttt_kd")
    assert r.returncode == 0
    assert "2 cells" in r.stdout and "synth-scannet->synth-s3dis" in r.stdout


def test_show_writes_a_picture(tmp_path):
    out = tmp_path / "scene.png"
    r = bench("show", "synth-scannet/test_0000", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 20_000


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    r = bench_process("run", "--grid", "smoke", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.mark.slow
def test_smoke_grid_regression(smoke_results):
    """Key numbers against expectations derived from the measured seed spread (tests/smoke_expectations.py:
    mean and std over 5 seeds of each row's mIoU and of its paired gain over Source-Only), so the test passes
    on any CPU type and fails when a method's behaviour changes. Regenerate with
    ``python -m tests.smoke_expectations`` after an intended change."""
    from smoke_expectations import check, keyed

    cells = pd.read_parquet(smoke_results / "cells.parquet")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    got = {k: v[0] for k, v in keyed(cells).items()}
    expected = json.loads(EXPECTED.read_text())["rows"]
    assert set(got) == set(expected)
    problems = [p for k, e in sorted(expected.items()) for p in check(k, got[k], e)]
    assert not problems, "\n".join(problems)
    # methods that adapt must change the prediction of the source model
    for pair in ("synth-scannet->synth-s3dis", "synth-scannet->synth-scannet"):
        src = got[f"Source-Only|{pair}"]["miou"]
        for lab in ("BN-Adapt", "TENT", "TTT-MAE"):
            assert got[f"{lab}|{pair}"]["miou"] != src, (lab, pair)
    assert len(pd.read_parquet(smoke_results / "scenes.parquet")) == 3 * len(cells)


def test_smoke_check_flags_a_changed_method():
    """The tolerance check itself: a gain moved by many seed deviations fails, seed-sized noise passes."""
    from smoke_expectations import check

    exp = {"miou_mean": 0.15, "miou_std": 0.01, "gain_mean": 0.005, "gain_std": 0.002, "steps": 1.0}
    assert check("x", {"miou": 0.17, "gain": 0.008, "steps": 1.0}, exp) == []
    assert check("x", {"miou": 0.15, "gain": 0.05, "steps": 1.0}, exp)  # gain far outside its spread
    assert check("x", {"miou": 0.40, "gain": 0.005, "steps": 1.0}, exp)
    assert check("x", {"miou": 0.15, "gain": 0.005, "steps": 2.0}, exp)


@pytest.mark.slow
def test_report_from_smoke_results(smoke_results):
    r = bench("report", "--results", str(smoke_results))
    assert r.returncode == 0, r.stderr
    rep = smoke_results / "report"
    md = (rep / "table_main.md").read_text()
    assert "Source-Only" in md and "TTT-KD" in md and "**" in md
    assert (rep / "table_main.tex").read_text().startswith("\\begin{tabular}")
    assert "peak mem" in (rep / "table_cost.md").read_text()
    assert "bootstrap test" in (rep / "table_stats.md").read_text()  # the paired test of issue 27
    for fig in ("fig_pareto", "fig_per_class_iou"):
        assert (rep / f"{fig}.png").stat().st_size > 5000 and (rep / f"{fig}.svg").is_file()
    # a rerun skips every finished cell
    r2 = bench_process("run", "--grid", "smoke", "--out", str(smoke_results))
    assert r2.returncode == 0 and "0 to run" in r2.stderr
