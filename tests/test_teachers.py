import numpy as np
import pytest
import torch

from bench.data.scene import Scene, View
from bench.errors import BenchError
from teachers import build_teacher
from teachers.cache import FeatureCache
from teachers.lift import lift, project

K = np.array([[100, 0, 49.5], [0, 100, 39.5], [0, 0, 1]], dtype=np.float32)


def _camera_scene():
    """A camera at the origin looking along +z (OpenCV), a wall at z=2 filling the view."""
    pose = np.eye(4, dtype=np.float32)
    depth = np.full((80, 100), 2.0, dtype=np.float32)
    view = View(np.zeros((80, 100, 3), np.uint8), depth, K, pose)
    coord = np.array([
        [0.0, 0.0, 2.0],  # visible, centre of the image
        [0.5, 0.2, 2.0],  # visible, right of centre
        [0.0, 0.0, 3.0],  # behind the wall: occluded
        [5.0, 0.0, 2.0],  # out of frame
        [0.0, 0.0, -1.0],  # behind the camera
    ], dtype=np.float32)
    return Scene("cam", "test", coord, np.zeros_like(coord), np.zeros(5, np.int64), None, [view])


def test_projection_and_occlusion():
    s = _camera_scene()
    u, v, seen = project(s.coord, s.views[0], tol=0.1)
    assert seen.tolist() == [True, True, False, False, False]
    assert u[0] == pytest.approx(49.5) and v[0] == pytest.approx(39.5)
    assert u[1] == pytest.approx(49.5 + 100 * 0.25) and v[1] == pytest.approx(39.5 + 100 * 0.1)


def test_lift_bilinear_and_average():
    s = _camera_scene()
    # a feature map whose channel 0 is the pixel column and channel 1 a constant
    h, w = 80, 100
    fmap = torch.stack([torch.arange(w).float().expand(h, w), torch.full((h, w), 7.0)])
    feat, mask = lift(s.coord, s.views * 2, [fmap, fmap * 3], tol=0.1)
    assert mask.tolist() == [True, True, False, False, False]
    # average of the two views (x1 and x3) = 2x the sampled value
    assert feat[0, 0] == pytest.approx(2 * 49.5, abs=1e-3)
    assert feat[1, 0] == pytest.approx(2 * 74.5, abs=1e-3)
    assert feat[0, 1] == pytest.approx(14.0)
    assert (feat[~mask] == 0).all()
    # a coarse map sampled bilinearly equals the upsampled map sampled at the pixel
    coarse = fmap[:, ::4, ::4].contiguous()
    up = torch.nn.functional.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    f1, _ = lift(s.coord, s.views, [coarse])
    f2, _ = lift(s.coord, s.views, [up])
    np.testing.assert_allclose(f1[:2], f2[:2], atol=0.05)


@pytest.mark.parametrize("spec, dim, grid", [
    ({"name": "dinov2", "weights": "random-init", "short_side": 56,
      "model_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2}}, 48, (4, 5)),
    ({"name": "clip", "arch": "ViT-B-32", "weights": "random-init",
      "model_kwargs": {}}, 768, (7, 7)),
    ({"name": "sam", "weights": "random-init",
      "model_kwargs": {"img_size": 64, "depth": 2, "embed_dim": 32, "num_heads": 2, "global_attn_indexes": (1,),
                       "window_size": 4}}, 256, (3, 4)),
])
def test_real_teacher_architectures_at_random_init(spec, dim, grid):
    t = build_teacher(spec)
    assert t.dim == dim and "random-init" in t.label
    imgs = np.random.default_rng(0).integers(0, 255, (2, 60, 80, 3), dtype=np.uint8)
    fm = t.feature_maps(torch.from_numpy(imgs))
    assert fm.shape == (2, dim, *grid)
    dense = t.dense(imgs)
    assert dense.shape == (2, dim, 60, 80)


def test_missing_weights_say_which_file(monkeypatch):
    monkeypatch.delenv("TTT_BENCH_WEIGHTS", raising=False)
    with pytest.raises(BenchError, match="TTT_BENCH_WEIGHTS.*dinov2_vitb14_pretrain.pth.*dinov2_vitb14_reg4_pretrain"
                                         ".pth.*random-init"):
        build_teacher({"name": "dinov2", "variant": "b"})
    with pytest.raises(BenchError, match="not found"):
        build_teacher({"name": "sam", "weights": "/nonexistent/sam.pth"})
    with pytest.raises(BenchError, match="variant 'x' unknown; valid: auto, s, b, l, g"):
        build_teacher({"name": "dinov2", "variant": "x"})


def test_teacher_factories_follow_the_config_contract():
    """Every entry has a config dataclass; its factory takes cfg= and device= keywords only."""
    import dataclasses
    import inspect

    from teachers import TEACHERS

    for e in TEACHERS.entries():
        assert dataclasses.is_dataclass(e.config), e.name
        assert "device" not in {f.name for f in dataclasses.fields(e.config)}, e.name
        params = inspect.signature(e.factory).parameters
        assert list(params) == ["cfg", "device"] and all(p.kind is p.KEYWORD_ONLY for p in params.values()), e.name
    with pytest.raises(BenchError, match="has no parameter 'size'.*valid parameters"):
        build_teacher({"name": "oracle", "size": 3})


def test_synth2d_and_oracle_on_a_synthetic_scene():
    from bench.data import get_dataset

    ds = get_dataset("synth-matterport")
    scene = ds.load(ds.scene_names("test", 1)[0])
    t = build_teacher("synth2d")
    feat, mask = t.point_features(scene)
    assert feat.shape == (scene.num_points, t.dim) and mask.mean() > 0.3
    assert np.isfinite(feat).all() and np.abs(feat[mask]).sum() > 0
    f1, m1 = t.point_features(scene, views=1)
    assert m1.sum() < mask.sum()
    o = build_teacher({"name": "oracle", "noise": 0.0})
    of, om = o.point_features(scene)
    lab = scene.label[om]
    same = of[om][lab == lab[0]]
    assert np.allclose(same, same[0])  # one embedding per class without noise
    assert not (om & (scene.label < 0)).any()


def test_feature_cache_identical_and_keyed(tmp_path):
    from bench.data import get_dataset

    ds = get_dataset("synth-scannet")
    scene = ds.load(ds.scene_names("test", 1)[0])
    o = build_teacher({"name": "oracle"})
    fc = FeatureCache(o, root=tmp_path)
    a = fc.get(ds.fingerprint(), scene)
    b = fc.get(ds.fingerprint(), scene)
    assert (fc.misses, fc.hits) == (1, 1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    FeatureCache(o, views=2, root=tmp_path).get(ds.fingerprint(), scene)
    FeatureCache(build_teacher({"name": "oracle", "noise": 0.1}), root=tmp_path).get(ds.fingerprint(), scene)
    fc.get({**ds.fingerprint(), "corruption": "jitter"}, scene)
    assert len(list(tmp_path.rglob("*.npz"))) == 4  # views, weights and data each change the key


# ------------------------------------------------------------------ the synth2d family and its training script
SYNTH2D_DIMS = {"synth2d-s": 32, "synth2d": 64, "synth2d-l": 96}


def test_synth2d_variants_build_with_their_feature_dims():
    from teachers import TEACHERS, check_teacher
    from teachers.train_synth2d import MAX_BYTES

    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 96, 128, 3), dtype=np.uint8))
    params, keys = [], set()
    for name, dim in SYNTH2D_DIMS.items():
        assert name in TEACHERS.names()
        assert check_teacher({"name": name, "weights": "random-init"}) == "random-init"
        t = build_teacher({"name": name, "weights": "random-init"})
        assert t.dim == dim and t.label == f"{name} (random-init)"
        assert t.feature_maps(imgs).shape == (2, dim, 48, 64)  # features at 1/2 resolution
        params.append(sum(p.numel() for p in t.net.parameters()))
        keys.add(tuple(sorted(t.cache_key().items())))
    assert params == sorted(params) and len(set(params)) == 3  # s < m < l in capacity
    assert params[-1] * 4 < MAX_BYTES  # even the large one fits the 10 MB limit in float32
    assert len(keys) == 3  # features of different variants are never mixed in the cache


def test_synth2d_missing_or_wrong_weights_say_how_to_fix(tmp_path, monkeypatch):
    import teachers.synth2d as s2d

    monkeypatch.setattr(s2d, "WEIGHTS_DIR", tmp_path)  # no shipped weights here
    with pytest.raises(BenchError, match=r"synth2d-l.*not found.*python -m teachers.train_synth2d --variant l"):
        build_teacher("synth2d-l")
    with pytest.raises(BenchError, match=r"synth2d-s.*nowhere\.pt not found.*--variant s"):
        build_teacher({"name": "synth2d-s", "weights": str(tmp_path / "nowhere.pt")})
    small = tmp_path / "synth2d-s.pt"
    torch.save(s2d.Synth2DNet(32, 12).state_dict(), small)
    assert build_teacher("synth2d-s").dim == 32  # the default file of the variant, once it exists
    with pytest.raises(BenchError, match=r"synth2d-l is width 32, 96-d features; are these another variant"):
        build_teacher({"name": "synth2d-l", "weights": str(small)})


def _tiny_args(tmp_path, *extra):
    from teachers.train_synth2d import parse_args

    return parse_args(["--variant", "s", "--domains", "synth-scannet", "--holdout", "synth-matterport",
                       "--scenes", "1", "--epochs", "1", "--views", "2", "--test-scenes", "1",
                       "--out", str(tmp_path / "t.pt"), *extra])


def test_train_synth2d_tiny_run_writes_weights_and_report(tmp_path):
    import json

    from teachers.train_synth2d import run

    report = run(_tiny_args(tmp_path))
    out = tmp_path / "t.pt"
    assert out.is_file() and report["file_bytes"] == out.stat().st_size
    assert json.loads(out.with_suffix(".json").read_text()) == report
    assert (report["teacher"], report["dim"], report["epochs"], report["train_views"]) == ("synth2d-s", 32, 1, 2)
    scores = report["miou_2d"]
    assert set(scores["train_domains"]) == {"synth-scannet"} and set(scores["holdout"]) == {"synth-matterport"}
    every = [*scores["train_domains"].values(), *scores["holdout"].values()]
    assert all(0 <= m <= 1 for m in every)
    assert report["spread_2d"] == pytest.approx(max(every) - min(every), abs=1e-4)
    assert report["holdout_gap_2d"] == pytest.approx(every[0] - every[1], abs=1e-4)
    assert report["train_seconds"] >= 0 and report["params"] > 0
    t = build_teacher({"name": "synth2d-s", "weights": str(out)})  # the file it wrote is a usable teacher
    assert t.dim == 32 and t.weights_id not in ("", "random-init")


def test_train_synth2d_refuses_files_over_the_limit(tmp_path, monkeypatch):
    from teachers import train_synth2d as tr

    f = tmp_path / "big.pt"
    f.write_bytes(b"x" * 2000)
    assert tr.check_size(f, 2000) == 2000 and f.is_file()
    with pytest.raises(BenchError, match=r"big\.pt: 0\.00 MB is over the 0 MB limit.*deleted"):
        tr.check_size(f, 1999)
    assert not f.exists()
    monkeypatch.setattr(tr, "MAX_BYTES", 100_000)  # the small variant (167k float32 parameters) is over it
    with pytest.raises(BenchError, match=r"variant s: \d+ parameters need 0\.7 MB, over the 0 MB limit"):
        tr.run(_tiny_args(tmp_path))
    assert not (tmp_path / "t.pt").exists()


def test_train_synth2d_checks_domain_names(tmp_path):
    from teachers.train_synth2d import main, parse_args, run

    assert parse_args([]).holdout == ["synth-val"] and parse_args(["--holdout"]).holdout == []
    with pytest.raises(BenchError, match=r"--holdout: unknown dataset 'synth-nowhere'; valid names: .*synth-scannet"):
        run(_tiny_args(tmp_path, "--holdout", "synth-nowhere"))
    with pytest.raises(BenchError, match=r"--holdout synth-scannet is also in --domains"):
        run(_tiny_args(tmp_path, "--holdout", "synth-scannet"))
    assert main(["--domains", "synth-nowhere", "--out", str(tmp_path / "x.pt")]) == 2
