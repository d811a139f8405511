import numpy as np
import pytest
import torch

from backbones.batch import PointBatch, make_batch
from backbones.checkpoint import get_or_train
from backbones.model import ModelSpec, build_model
from backbones.spunet import voxelize
from backbones.train import TrainConfig, evaluate, train


def _small(scene, n=4000, seed=0):
    from dataclasses import replace

    idx = np.sort(np.random.default_rng(seed).choice(scene.num_points, min(n, scene.num_points), replace=False))
    return replace(scene, coord=scene.coord[idx], color=scene.color[idx], label=scene.label[idx],
                   normal=scene.normal[idx], views=[])


@pytest.fixture(scope="module")
def scene():
    from bench.data import get_dataset

    ds = get_dataset("synth-s3dis")
    return _small(ds.load(ds.scene_names("train", 1)[0], with_views=False))


def test_voxelisation_round_trip(scene):
    b = make_batch([scene, scene], ("color", "normal"))
    indices, inverse, shape = voxelize(b, 0.1)
    assert inverse.shape[0] == b.coord.shape[0]  # every point has a voxel
    assert indices.shape[0] == int(inverse.max()) + 1  # every voxel has a point
    # points in one voxel share its grid cell; the two copies of the scene land in different batches
    cell = torch.floor((b.coord - b.coord[b.batch == 0].min(0).values) / 0.1).long()
    vox = indices[inverse].long()
    assert torch.equal(vox[:, 1:], cell)
    assert torch.equal(vox[:, 0], b.batch)
    assert (indices[:, 1:].max(0).values < torch.tensor(shape)).all()


@pytest.mark.parametrize("backbone, steps", [("spunet", 150), ("pointnet2", 120)])
def test_overfits_one_scene(scene, backbone, steps):
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone=backbone))
    cfg = TrainConfig(epochs=steps, lr=0.01, scenes_per_step=1, augment=False)
    train(model, cfg, [scene], [], 0, "cpu")
    assert evaluate(model, [scene], "cpu") > 0.8


@pytest.mark.parametrize("backbone", ["spunet", "pointnet2"])
def test_gradient_reaches_every_parameter(scene, backbone):
    model = build_model(ModelSpec(backbone=backbone, kd_dim=8, mae=True))
    model.train()
    out = model(make_batch([scene], ("color", "normal")), ("seg", "kd", "mae"))
    (out["seg"].sum() + out["kd"].sum() + out["mae"].sum()
     + model.forward2d(torch.randn(out["seg"].shape[0], 8)).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_every_point_is_predicted(scene):
    model = build_model(ModelSpec(backbone="spunet")).eval()
    with torch.no_grad():
        out = model(make_batch([scene], ("color", "normal")))
    assert out["seg"].shape == (scene.num_points, 12)
    assert torch.isfinite(out["seg"]).all()


def test_checkpoint_cache_hit_miss_corrupt(tmp_path, scene, caplog):
    spec = ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]})
    key = {"model": spec.to_dict(), "recipe": "source", "train": {"epochs": 1}, "data": {"dataset": "x"}, "seed": 0}
    calls = []

    def train_fn(model):
        calls.append(1)
        return train(model, TrainConfig(epochs=1, augment=False), [scene], [], 0, "cpu")

    m1, info1 = get_or_train(key, spec, train_fn, "cpu", root=tmp_path)
    assert info1["cache"] == "miss" and len(calls) == 1
    m2, info2 = get_or_train(key, spec, train_fn, "cpu", root=tmp_path)
    assert info2["cache"] == "hit" and len(calls) == 1
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    # a corrupt file is retrained with a warning, never used
    path = next(tmp_path.glob("*.pt"))
    path.write_bytes(b"garbage")
    _, info3 = get_or_train(key, spec, train_fn, "cpu", root=tmp_path)
    assert info3["cache"] == "retrained" and len(calls) == 2
    assert "unusable" in caplog.text
    # a different key is a miss
    _, info4 = get_or_train({**key, "seed": 1}, spec, train_fn, "cpu", root=tmp_path)
    assert info4["cache"] == "miss"


def test_training_is_reproducible(scene):
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(ModelSpec(backbone="spunet", backbone_cfg={"channels": [8, 16]}))
        train(model, TrainConfig(epochs=2), [scene], [], 3, "cpu")
        outs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(outs[0], outs[1])


def _rulebook_calls(monkeypatch) -> list:
    from spconv.pytorch import ops

    calls, orig = [], ops.get_indice_pairs

    def counted(indices, *a, **k):
        calls.append(indices.shape[0])
        return orig(indices, *a, **k)

    monkeypatch.setattr(ops, "get_indice_pairs", counted)
    return calls


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_rulebook_reuse_is_bit_identical_and_skips_rebuilding(scene, monkeypatch, one_thread):
    """Repeated TTT steps on one scene's batch reuse voxels and submanifold rulebooks: the same outputs,
    gradients and weights bit for bit as without reuse, and fewer rulebooks built. One torch thread: with
    more, the backward's reductions are not bit-reproducible even without reuse."""
    import copy

    from backbones.spunet import rulebook_reuse

    torch.manual_seed(0)
    base = build_model(ModelSpec(backbone="spunet", kd_dim=8)).eval()
    target = torch.randn(scene.num_points, 8, generator=torch.Generator().manual_seed(1))
    calls = _rulebook_calls(monkeypatch)
    results = {}
    for reuse in (False, True):
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-2)
        batch = make_batch([scene], ("color", "normal"))
        calls.clear()
        with rulebook_reuse(reuse):
            for _ in range(3):
                loss = (model(batch, ("kd",))["kd"] - target).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                out = model(batch.with_feat(batch.feat * 0.5))["seg"]  # same coordinates, new features
        results[reuse] = (out, [p.detach().clone() for p in model.parameters()], len(calls))
    (out0, w0, n0), (out1, w1, n1) = results[False], results[True]
    assert torch.equal(out0, out1)
    assert all(torch.equal(a, b) for a, b in zip(w0, w1))
    per_forward = n0 // 4  # 4 submanifold + 3 strided rulebooks per forward without reuse
    assert n0 == 4 * per_forward and per_forward == 7
    assert n1 == per_forward + 3 * 3  # later forwards rebuild only the 3 strided (kernel 2) rulebooks


def test_rulebook_reuse_follows_the_coordinates(scene, monkeypatch, one_thread):
    """A new batch or an in-place change of the coordinates never sees another coordinate set's rulebooks."""
    from backbones.spunet import rulebook_reuse

    model = build_model(ModelSpec(backbone="spunet")).eval()
    calls = _rulebook_calls(monkeypatch)
    batch = make_batch([scene], ("color", "normal"))
    with torch.no_grad():
        model(batch)
        calls.clear()
        batch.coord.mul_(1.5)  # in place: the cached voxels are stale
        moved = model(batch)["seg"]
        assert len(calls) == 7
        with rulebook_reuse(False):
            fresh = model(PointBatch(batch.coord.clone(), batch.feat, batch.batch.clone(), 1))["seg"]
    assert torch.equal(moved, fresh)
