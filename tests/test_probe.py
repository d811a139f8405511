"""The teacher-only probe (``teacher_probe``): its fit against plain-torch logistic regression, what it
predicts on points seen by no view, and a run through the harness (source scenes with their labels and
teacher features reach ``prepare``; the row records its cost)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from backbones.batch import PointBatch
from backbones.model import ModelSpec, build_model
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene
from bench.errors import BenchError
from bench.grid import load_grid
from bench.registry import make_config
from bench.runner import run_grid
from methods import METHODS, SceneInput

C, D, N = 12, 6, 300


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _scene(i: int, seen: float = 0.8, classes: int = 4) -> SceneInput:
    """Teacher features that encode the label linearly, plus noise; ``seen`` share of points seen."""
    rng = np.random.default_rng(i)
    proj = np.random.default_rng(99).normal(size=(C, D))
    label = rng.integers(0, classes, N)
    label[:5] = -1
    coord = rng.uniform(0, 3, (N, 3))
    feat = proj[label.clip(0)] + rng.normal(0, 0.3, (N, D))
    b = PointBatch(torch.from_numpy(coord), torch.from_numpy(rng.uniform(-1, 1, (N, 6))),
                   torch.zeros(N, dtype=torch.long), 1)
    inp = SceneInput(b, i, torch.Generator().manual_seed(100 + i), torch.from_numpy(feat),
                     torch.from_numpy(rng.uniform(size=N) < seen))
    inp.label = torch.from_numpy(label)
    return inp


def _probe(**params):
    entry = METHODS.get("teacher_probe")
    model = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]})).eval()
    return entry.factory(model=model, cfg=make_config(entry, params, "method")), model


def ref_fit(source: list[SceneInput], lr: float, epochs: int):
    """Multinomial logistic regression on the standardised seen, labelled points; the layer initialised
    uniformly in +-1/sqrt(D) (weights, then bias) from the first scene's generator; full-batch Adam."""
    x = torch.cat([s.teacher_feat[s.teacher_mask & (s.label >= 0)] for s in source])
    y = torch.cat([s.label[s.teacher_mask & (s.label >= 0)] for s in source])
    mean, std = x.mean(0), x.std(0)
    x = (x - mean) / std
    g = source[0].generator
    w = ((torch.rand(C, D, generator=g) * 2 - 1) / D ** 0.5).requires_grad_(True)
    b = ((torch.rand(C, generator=g) * 2 - 1) / D ** 0.5).requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(x @ w.T + b, y).backward()
        opt.step()
    return lambda f: ((f - mean) / std) @ w.detach().T + b.detach()


def test_probe_fits_logistic_regression_and_carries_to_unseen_points():
    source = [_scene(i) for i in range(3)]
    probe, model = _probe(lr=0.05, epochs=60)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe.prepare(source)
    ref = ref_fit([_scene(i) for i in range(3)], lr=0.05, epochs=60)  # fresh generators
    target = _scene(7, seen=0.6)
    assert probe.adapt(target) == 0 and probe.last_output is None and probe.optimizer is None
    out = probe.predict(target)
    m = target.teacher_mask
    torch.testing.assert_close(out[m], ref(target.teacher_feat[m]), rtol=1e-6, atol=1e-6)
    # a point seen by no view takes the logits of its nearest seen point (3D distance, brute force)
    d = torch.cdist(target.batch.coord[~m], target.batch.coord[m])
    torch.testing.assert_close(out[~m], out[m][d.argmin(1)])
    assert probe.scene_stats() == {"seen": float(m.sum()) / N}
    # the teacher's features encode the labels: the probe predicts the seen points nearly perfectly
    ok = target.label[m] >= 0
    assert (out[m][ok].argmax(1) == target.label[m][ok]).double().mean() > 0.95
    # the 3D model is never touched, and a reset keeps the fitted head
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    probe.reset()
    assert torch.equal(probe.predict(target), out)


def test_probe_without_seen_points_predicts_the_source_prior():
    source = [_scene(i, classes=3) for i in range(2)]
    probe, _ = _probe(epochs=5)
    probe.prepare(source)
    target = _scene(5, seen=0.0)
    out = probe.predict(target)
    y = torch.cat([s.label[s.teacher_mask & (s.label >= 0)] for s in source])
    counts = torch.bincount(y, minlength=C).double()
    torch.testing.assert_close(out, torch.log((counts + 1) / (counts.sum() + C)).expand(N, -1))
    assert out[0].argmax() == counts.argmax() and probe.scene_stats() == {"seen": 0.0}


def test_probe_needs_labelled_source_scenes():
    probe, _ = _probe()
    s = _scene(0)
    s.label = None
    with pytest.raises(BenchError, match="teacher_probe: prepare"):
        probe.prepare([s])
    with pytest.raises(BenchError, match="teacher_probe: the head is fitted in prepare"):
        probe.predict(_scene(1))


# ------------------------------------------------------------------------------- through the harness
class _Planes(Dataset):
    """Two classes split by height, no views (the oracle teacher then sees every labelled point)."""

    has_views = False

    def __init__(self, shift: float):
        self.name, self.classes, self.shift = f"probe-planes{shift:g}", (0, 1), shift

    def scene_names(self, split, count=None):
        return [f"{split}_{i}" for i in range(count or 2)]

    def load(self, name, with_views=True):
        rng = np.random.default_rng(sum(map(ord, name)))
        coord = rng.uniform(0, 2, (300, 3)).astype(np.float32)
        label = (coord[:, 2] > 1).astype(np.int64)
        color = np.clip(0.5 + self.shift + rng.normal(0, 0.05, (300, 3)), 0, 1).astype(np.float32)
        return Scene(name, self.name, coord, color, label, np.tile([0, 0, 1], (300, 1)).astype(np.float32))

    def fingerprint(self):
        return {"dataset": self.name}


DATASETS.register("probe-planes-a", description="test dataset")(lambda **kw: _Planes(0.0))
DATASETS.register("probe-planes-b", description="test dataset, shifted colours")(lambda **kw: _Planes(0.2))

GRID = """
name = "probe"
pairs = ["probe-planes-a->probe-planes-b"]
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
teachers = ["oracle"]
seeds = [0]
train_scenes = 2
val_scenes = 0
test_scenes = 2
[train]
epochs = 1
[[methods]]
name = "teacher_probe"
label = "Teacher-Probe"
"""


def test_probe_row_through_the_harness(tmp_path, monkeypatch):
    monkeypatch.setenv("TTT_BENCH_CACHE", str(tmp_path / "cache"))
    torch.set_default_dtype(torch.float32)
    p = tmp_path / "probe.toml"
    p.write_text(GRID)
    run_grid(load_grid(str(p)), tmp_path / "out")
    row = pd.read_parquet(tmp_path / "out" / "cells.parquet").iloc[0]
    assert row["status"] == "ok", row["error"]
    # the head learned from the 16 labelled source scenes: the oracle's features give the labels away
    assert row["source_scenes"] == 16 and row["miou"] > 0.95
    assert row["prepare_s"] > 0 and row["teacher_cache_misses"] >= 16 + 2 and row["steps_total"] == 0
