"""Speed benchmarks (pytest-benchmark). Normal test runs execute each once (--benchmark-disable in
pyproject); measure with ``python -m pytest tests/perf --benchmark-enable``. Nothing here asserts a
time: the numbers are tracked (``--benchmark-autosave`` / ``--benchmark-compare``), and the parts of
a TTT-KD step and a cell's harness overhead are recorded in each benchmark's ``extra_info``.
One torch thread, so numbers do not depend on what else the machine runs on its other cores."""

import numpy as np
import pytest
import torch

from backbones.batch import make_batch
from backbones.model import ModelSpec, build_model
from backbones.pointnet import knn


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scene():
    from bench.data import get_dataset

    ds = get_dataset("synth-s3dis")
    return ds.load(ds.scene_names("test", 1)[0])


@pytest.mark.parametrize("backbone", ["spunet", "pointnet2"])
def test_forward(benchmark, scene, backbone):
    model = build_model(ModelSpec(backbone=backbone)).eval()
    batch = make_batch([scene], model.spec.features)

    def fwd():
        with torch.no_grad():
            return model(batch)["seg"]

    out = benchmark(fwd)
    assert out.shape[0] == scene.num_points


@pytest.mark.parametrize("reuse", [False, True], ids=["rulebook-rebuilt", "rulebook-reused"])
def test_forward_same_coordinates(benchmark, scene, reuse):
    """A no-grad spunet forward on a batch the model has already seen (a method's "after" prediction,
    CoTTA's anchor), with spunet's rulebook reuse off and on."""
    from backbones.spunet import rulebook_reuse

    model = build_model(ModelSpec(backbone="spunet")).eval()
    batch = make_batch([scene], model.spec.features)

    def fwd():
        with torch.no_grad():
            return model(batch)["seg"]

    with rulebook_reuse(reuse):
        fwd()  # the first forward on the batch builds what later ones reuse
        out = benchmark(fwd)
    assert out.shape[0] == scene.num_points


@pytest.mark.parametrize("reuse", [False, True], ids=["rulebook-rebuilt", "rulebook-reused"])
def test_ttt_kd_scene(benchmark, scene, reuse):
    """TTT-KD's work on one scene as the harness runs it: 5 steps and the "after" prediction on one batch."""
    from backbones.spunet import rulebook_reuse
    from bench.profile import ttt_step_fn

    model = build_model(ModelSpec(backbone="spunet", kd_dim=64)).eval()
    target = torch.randn(scene.num_points, 64)
    mask = torch.ones(scene.num_points, dtype=torch.bool)
    opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)

    def scene_work():
        batch = make_batch([scene], model.spec.features)
        ttt_step_fn(model, batch, target, mask, opt, 5)()
        with torch.no_grad():
            return model(batch)["seg"]

    with rulebook_reuse(reuse):
        out = benchmark(scene_work)
    assert torch.isfinite(out).all()


def test_ttt_kd_step(benchmark, scene):
    from backbones.losses import distill_loss

    model = build_model(ModelSpec(backbone="spunet", kd_dim=64)).eval()
    batch = make_batch([scene], model.spec.features)
    target = torch.randn(scene.num_points, 64)
    mask = torch.ones(scene.num_points, dtype=torch.bool)
    opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)

    def step():
        loss = distill_loss(model(batch, ("kd",))["kd"], target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    assert np.isfinite(benchmark(step))


def test_ttt_kd_step_breakdown(benchmark, scene):
    """The TTT-KD step's parts (bench/profile.py); medians go to extra_info, and the parts add up to the step."""
    from bench.profile import STEP_PARTS, profile_ttt_step

    b = benchmark.pedantic(profile_ttt_step, args=(scene, "cpu", 3), rounds=1, iterations=1)
    for p in STEP_PARTS:
        benchmark.extra_info[f"{p}_s"] = b[p]["median"]
        assert b[p]["median"] >= 0, p
    parts = sum(b[p]["median"] for p in STEP_PARTS)
    assert 0.5 * b["total"]["median"] < parts < 1.5 * b["total"]["median"]  # sum of medians vs median of sums


def test_rulebook_reuse_ab(benchmark, scene):
    """The interleaved reuse off/on A/B of bench/profile.py; medians (wall and CPU) go to extra_info."""
    from bench.profile import profile_reuse_ab

    ab = benchmark.pedantic(profile_reuse_ab, args=(scene, "cpu", 2), rounds=1, iterations=1)
    for mode in ("off", "on"):
        for k, v in ab[mode].items():
            benchmark.extra_info[f"{k}_{mode}_s"] = v["median"]
            assert v["n"] == 2 and v["median"] > 0


def test_cell_harness_overhead(benchmark):
    """One smoke TTT-KD cell with warm caches: the cell's wall time, and what is not model compute
    (adaptation, prediction, teacher features, training if it happened) goes to extra_info."""
    from bench.cell import run_cell
    from bench.grid import load_grid

    cells = [c for c in load_grid("smoke").cells if c.method == "ttt_kd" and c.source == c.target]
    cell = {**cells[0].to_dict(), "test_scenes": 2}  # run_cell resolves the plain form
    row, _ = run_cell(cell)  # warm-up: trains the model and fills the caches
    assert row["status"] == "ok", row.get("error")

    row, scenes = benchmark.pedantic(run_cell, args=(cell,), rounds=2, iterations=1)
    assert row["status"] == "ok" and len(scenes) == 2 and np.isfinite(row["miou"])
    n = len(scenes)
    compute = (row["adapt_s_per_scene"] + row["infer_s_per_scene"]) * n + row["teacher_s"]
    compute += row["train_s"] if row["checkpoint_cache"] in ("miss", "retrained") else 0.0  # trained in this cell
    benchmark.extra_info.update(cell_s=row["cell_seconds"], compute_s=compute,
                                overhead_s=row["cell_seconds"] - compute,
                                overhead_share=(row["cell_seconds"] - compute) / row["cell_seconds"])
    assert compute <= row["cell_seconds"]


def test_knn(benchmark):
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(20000, 3, generator=g) * torch.tensor([6.0, 5.0, 3.0])
    idx, _ = benchmark(knn, pts[::4].contiguous(), pts, 16, 1024, 0.3)
    assert idx.shape == (5000, 16)


def test_lift_synth2d(benchmark, scene):
    from teachers import build_teacher

    t = build_teacher("synth2d")
    feat, mask = benchmark(t.point_features, scene)
    assert feat.shape == (scene.num_points, t.dim)


def test_scene_generation(benchmark):
    from bench.data.synth import generate_scene

    s = benchmark.pedantic(generate_scene, args=("synth-matterport", "test", 0, 0), rounds=1, iterations=1)
    assert s.num_points > 1000


def test_profile_threads_never_exceed_free_cores(monkeypatch):
    import os

    from bench import profile as prof
    from bench.errors import BenchError

    monkeypatch.setattr(prof, "cpu_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 1.0, 1.0))  # another process keeps ~2 cores busy
    assert prof.choose_threads(2) == 1 and prof.choose_threads(None) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.1, 0.1))
    assert prof.choose_threads(2) == 2 and prof.choose_threads(None) == 1  # one thread unless asked
    with pytest.raises(BenchError, match="at least 1"):
        prof.choose_threads(0)


def test_profile_reports_median_spread_and_parts():
    import io

    from rich.console import Console

    from bench.profile import STEP_PARTS, TRAIN_PARTS, profile

    before = torch.get_num_threads()
    buf = io.StringIO()
    out = profile("cpu", 2, Console(file=buf, width=200), threads=1, backbones=("spunet",))
    torch.set_num_threads(before)
    assert out["threads"] == 1 and out["repeats"] == 2
    r = out["backbones"][0]
    assert r["ttt_step_s"]["n"] == 2 and r["ttt_step_s"]["min"] <= r["ttt_step_s"]["median"] <= r["ttt_step_s"]["max"]
    assert set(STEP_PARTS) <= set(out["ttt_step"]) and set(TRAIN_PARTS) <= set(out["train_step"])
    assert out["ttt_step"]["rulebook"]["median"] > 0 and out["train_step"]["backward"]["median"] > 0
    text = buf.getvalue()
    assert "rulebook" in text and "25-75 %" in text and "1 torch thread(s)" in text


def test_gemm_floor_counts_the_rulebook_pairs(benchmark, scene):
    """The arithmetic floor of bench/profile.py multiplies exactly the rows the rulebooks hold: a level-0
    submanifold convolution's pairs equal the occupied 3x3x3 neighbours of every voxel, counted here
    independently from the voxel coordinates; only the stem skips the input's gradient."""
    import spconv.pytorch as spconv

    from backbones.spunet import voxelize
    from bench.profile import conv_gemms, profile_gemm_floor

    model = build_model(ModelSpec(backbone="spunet", kd_dim=64), "cpu").eval()
    batch = make_batch([scene], model.spec.features)
    shapes = conv_gemms(model, batch)
    convs = [m for m in model.modules() if isinstance(m, spconv.conv.SparseConvolution)]
    assert len(shapes) == len(convs)
    assert [s[3] for s in shapes] == [False] + [True] * (len(shapes) - 1)  # the stem's input needs no gradient
    idx, _, _ = voxelize(batch, model.backbone.cfg.voxel_size)
    occupied = {tuple(v) for v in idx[:, 1:].tolist()}
    offsets = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]
    pairs = sum((x + a, y + b, z + c) in occupied for x, y, z in occupied for a, b, c in offsets)
    c0 = model.backbone.cfg.channels[0]
    assert shapes[1][:3] == (pairs, c0, c0)  # enc0's first convolution
    f = benchmark.pedantic(profile_gemm_floor, args=(scene, "cpu", 2), rounds=1, iterations=1)
    assert f["convs"] == len(shapes) and f["floor_s"]["n"] == 2 and f["peak_gflops"] > 0
    assert f["gflop"] == pytest.approx(sum(2 * p * i * o * (3 if g else 2) for p, i, o, g in shapes) / 1e9)
    benchmark.extra_info.update(gflop=f["gflop"], floor_s=f["floor_s"]["median"])


def test_profile_at_a_coarser_voxel_size():
    """``bench profile --voxel-size``: every profiled spunet is built at that size (fewer voxels at a
    coarser grid, counted by the profile and independently here)."""
    import io

    from rich.console import Console

    from backbones.spunet import voxelize
    from bench.profile import _scenes, profile, spunet_spec

    assert build_model(spunet_spec(0.16), "cpu").backbone.cfg.voxel_size == 0.16
    assert build_model(spunet_spec(), "cpu").backbone.cfg.voxel_size == 0.08
    before = torch.get_num_threads()
    buf = io.StringIO()
    rows = {v: profile("cpu", 1, Console(file=buf, width=200), threads=1, backbones=("spunet",), breakdown=False,
                       voxel_size=v)["backbones"][0] for v in (None, 0.16)}
    torch.set_num_threads(before)
    test, _ = _scenes(0)
    batch = make_batch([test], ("color", "normal"))
    assert rows[None]["voxels"] == voxelize(batch, 0.08)[0].shape[0]
    assert rows[0.16]["voxels"] == voxelize(batch, 0.16)[0].shape[0] < rows[None]["voxels"]
    assert "voxels" in buf.getvalue()
