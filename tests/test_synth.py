import numpy as np
import pytest
import torch

from bench.data.classes import NUM_CLASSES
from bench.data.corrupt import CORRUPTIONS, corrupt
from bench.data.synth import DOMAINS, generate_scene
from teachers.lift import project


@pytest.fixture(scope="module")
def scene():
    return generate_scene("synth-scannet", "test", 0, 0)


def test_deterministic_and_seeded(scene):
    again = generate_scene("synth-scannet", "test", 0, 0)
    np.testing.assert_array_equal(scene.coord, again.coord)
    np.testing.assert_array_equal(scene.views[3].image, again.views[3].image)
    other = generate_scene("synth-scannet", "test", 0, 1)
    assert other.num_points != scene.num_points or not np.array_equal(other.coord, scene.coord)
    other_split = generate_scene("synth-scannet", "train", 0, 0)
    assert not np.array_equal(other_split.coord[:100], scene.coord[:100])


def test_shapes_and_classes(scene):
    n = scene.num_points
    assert scene.coord.shape == (n, 3) and scene.color.shape == (n, 3) and scene.normal.shape == (n, 3)
    assert 2000 < n <= 20000
    assert scene.label.min() >= -1 and scene.label.max() < NUM_CLASSES
    present = set(np.unique(scene.label)) - {-1}
    assert len(present) >= 5
    assert 2 not in present  # synth-scannet has no ceiling
    np.testing.assert_allclose(np.linalg.norm(scene.normal, axis=1), 1.0, atol=1e-3)
    assert len(scene.views) == 10
    v = scene.views[0]
    assert v.image.shape == (96, 128, 3) and v.depth.shape == (96, 128) and v.label.shape == (96, 128)


def test_projection_consistency(scene):
    """A point projected with a view's pose lands on a pixel whose depth and label match."""
    agree, total = 0, 0
    for v in scene.views:
        u, vv, seen = project(scene.coord, v, tol=0.15)
        idx = np.nonzero(seen & (scene.label >= 0))[0]
        pl = v.label[np.round(vv[idx]).astype(int), np.round(u[idx]).astype(int)]
        agree += int((pl == scene.label[idx]).sum())
        total += len(idx)
    assert total > 0.3 * scene.num_points
    assert agree / total > 0.85  # edges and registration noise make a few disagree


def test_domains_differ(scene):
    s3 = generate_scene("synth-s3dis", "test", 0, 0)
    assert 2 in set(np.unique(s3.label))  # ceilings
    assert abs(scene.color.mean() - s3.color.mean()) > 0.02 or abs(scene.color.std() - s3.color.std()) > 0.02
    assert DOMAINS["synth-s3dis"].sensor.voxel < DOMAINS["synth-scannet"].sensor.voxel


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_corruption_severity_is_monotone(scene, name):
    def effect(s):
        c = corrupt(name, scene, s, seed=1)
        if c.num_points != scene.num_points:
            return abs(c.num_points - scene.num_points)
        return float(np.abs(c.coord - scene.coord).mean() + np.abs(c.color - scene.color).mean())

    effects = [effect(s) for s in range(1, 6)]
    assert effects[0] > 0
    assert all(b >= a for a, b in zip(effects, effects[1:])), effects


def test_rigid_corruptions_keep_views_consistent(scene):
    for name in ("rotation", "scale"):
        c = corrupt(name, scene, 3, seed=0)
        s = float(np.linalg.norm(c.coord[1] - c.coord[0]) / np.linalg.norm(scene.coord[1] - scene.coord[0]))
        seen_before = sum(project(scene.coord, v, tol=0.1)[2].sum() for v in scene.views)
        seen_after = sum(project(c.coord, v, tol=0.1 * s)[2].sum() for v in c.views)  # depths scale by s
        assert seen_after == pytest.approx(seen_before, rel=0.02), name


def test_dataset_cache_and_corrupted_spec():
    from bench.data import get_dataset

    ds = get_dataset("synth-s3dis")
    names = ds.scene_names("test", 2)
    a = ds.load(names[0])
    assert (ds.path(names[0]) / "coord.npy").is_file()
    b = ds.load(names[0])
    np.testing.assert_array_equal(a.coord, b.coord)
    cd = get_dataset("synth-s3dis:jitter@2")
    assert cd.name == "synth-s3dis:jitter@2"
    c = cd.load(names[0])
    assert not np.array_equal(c.coord, a.coord) and c.num_points == a.num_points
    assert set(ds.scene_names("train", 5)).isdisjoint(ds.scene_names("test", 5))


def test_box_culling_changes_no_hit():
    """Ray casting only the boxes a camera can see gives the same hits as casting all of them."""
    from bench.data.synth import DOMAINS, build_room, camera_rays, intrinsic_for, look_at, raycast, visible_boxes

    rng = np.random.default_rng(3)
    room = build_room(DOMAINS["synth-s3dis"], rng)
    boxes = room.boxes.tensors()
    k = intrinsic_for((48, 64), 80.0)
    for yaw in np.linspace(0, 2 * np.pi, 6, endpoint=False):
        eye = np.array([room.lx / 2, room.ly / 2, 1.4])
        pose = look_at(eye, eye + np.array([np.cos(yaw), np.sin(yaw), -0.3]))
        o, d, _ = camera_rays(k, pose, (48, 64))
        t_all, b_all, n_all = raycast(o, d, boxes)
        keep = visible_boxes(boxes, k, pose, (48, 64))
        assert len(keep) < len(boxes[0])
        t, b, n = raycast(o, d, [x[keep] for x in boxes[:3]])
        assert torch.equal(t, t_all) and torch.equal(keep[b][torch.isfinite(t)], b_all[torch.isfinite(t_all)])
        assert torch.equal(n[torch.isfinite(t)], n_all[torch.isfinite(t_all)])


def _slab_reference(origins, dirs, boxes):
    """The slab test written out in its stacked (rays, boxes, 3) form: every origin repeated per ray."""
    center, half, yaw = boxes[0], boxes[1], boxes[2]
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    o = origins[:, None, :] - center[None]
    d = dirs[:, None, :].expand_as(o)
    ol = torch.stack([cy * o[..., 0] + sy * o[..., 1], -sy * o[..., 0] + cy * o[..., 1], o[..., 2]], -1)
    dl = torch.stack([cy * d[..., 0] + sy * d[..., 1], -sy * d[..., 0] + cy * d[..., 1], d[..., 2]], -1)
    inv = 1.0 / torch.where(dl.abs() < 1e-9, torch.full_like(dl, 1e-9), dl)
    t1, t2 = (-half[None] - ol) * inv, (half[None] - ol) * inv
    tnear, axis = torch.minimum(t1, t2).max(-1)
    tfar = torch.maximum(t1, t2).min(-1).values
    hit = (tfar >= tnear) & (tnear > 1e-4)
    t, b = torch.where(hit, tnear, torch.full_like(tnear, float("inf"))).min(-1)
    rows = torch.arange(len(b))
    ax = axis[rows, b]
    nl = torch.zeros(len(b), 3)
    nl[rows, ax] = -torch.sign(dl[rows, b, ax])
    c, s = cy[b], sy[b]
    return t, b, torch.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)


def test_raycast_matches_the_stacked_slab_test_bit_for_bit():
    """The per-axis ray caster (one camera origin, or one origin per ray) gives exactly the hits, boxes
    and normals of the slab test written in its stacked form, also across chunk boundaries."""
    from bench.data.synth import DOMAINS, build_room, camera_rays, intrinsic_for, look_at, raycast

    room = build_room(DOMAINS["synth-scannet"], np.random.default_rng(5))
    boxes = room.boxes.tensors()
    k = intrinsic_for((30, 40), 80.0)
    for yaw in (0.3, 2.0, 4.1):
        eye = np.array([room.lx / 3, room.ly / 2, 1.3])
        pose = look_at(eye, eye + np.array([np.cos(yaw), np.sin(yaw), -0.4]))
        o, d, _ = camera_rays(k, pose, (30, 40))
        want = _slab_reference(o, d, boxes[:3])
        assert torch.isfinite(want[0]).sum() > 100
        for got in (raycast(o[0], d, boxes[:3], chunk=512), raycast(o, d, boxes[:3], chunk=512)):
            for g, w in zip(got, want):
                assert torch.equal(g, w)


def test_registry_contract_configs_and_unknown_options(tmp_path):
    """Every dataset and corruption is registered with a config dataclass and built from it; unknown
    dataset options are rejected listing the valid ones."""
    import dataclasses

    from bench.data import DATASETS, dataset_config, get_dataset
    from bench.errors import BenchError
    from bench.registry import make_config

    for entry in DATASETS.entries() + CORRUPTIONS.entries():
        if not getattr(entry.factory, "__module__", "").startswith("bench"):
            continue  # registered by a test module (tests/toy_datasets.py and the like), not by the package
        assert entry.config is not None and dataclasses.is_dataclass(entry.config), entry.name
        make_config(entry, {}, "x")  # every option has a default
    with pytest.raises(BenchError,
                       match=r"dataset 'synth-s3dis' has no parameter 'sed'; valid parameters: domain, root, seed"):
        get_dataset("synth-s3dis", sed=1)
    with pytest.raises(BenchError, match=r"dataset 'scannet' has no parameter 'frame_cont'.*parameters: frame_count"):
        get_dataset("scannet", root=str(tmp_path), frame_cont=3)
    cfg = dataset_config("synth-s3dis:jitter@2", {"seed": 3})
    ds = get_dataset("synth-s3dis:jitter@2", cfg=cfg)
    assert ds.base.seed == 3 and ds.name == "synth-s3dis:jitter@2"
    # the scene cache key holds the world version and the domain's parameter key: old caches never mix in
    from bench.data.synth import DOMAINS, WORLD_VERSION

    key = DOMAINS["synth-s3dis"].key
    assert get_dataset("synth-s3dis").fingerprint() == {"dataset": "synth-s3dis", "seed": 0,
                                                       "generator": WORLD_VERSION, "domain": key}
    assert WORLD_VERSION >= 4
    assert get_dataset("synth-s3dis").root.name == f"synth-s3dis-v{WORLD_VERSION}-s0-{key[:10]}"
    noisy = get_dataset("synth-s3dis", domain={"sensor.noise": 0.02})
    assert noisy.fingerprint()["domain"] != key and noisy.root != get_dataset("synth-s3dis").root
    with pytest.raises(BenchError, match="must have 5 values"):
        make_config(CORRUPTIONS.get("jitter"), {"sigma": [0.1, 0.2]}, "corruption")


def test_no_import_from_data_up_into_teachers():
    """bench/data sits below teachers/: importing it must not import teachers."""
    import subprocess
    import sys

    code = "import sys, bench.data; assert not [m for m in sys.modules if m.startswith('teachers')], 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
