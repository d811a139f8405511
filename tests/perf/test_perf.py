"""Speed benchmarks (pytest-benchmark). Normal test runs execute each once (--benchmark-disable in
pyproject); measure with ``python -m pytest tests/perf --benchmark-enable``."""

import numpy as np
import pytest
import torch

from backbones.batch import make_batch
from backbones.model import ModelSpec, build_model
from backbones.pointnet import knn


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
