"""Real-dataset readers on small fixture scenes written by the tests in each layout."""

import logging

import numpy as np
import pytest
from PIL import Image

from bench.data import get_dataset
from bench.data.classes import CLASS_ID, IGNORE
from bench.errors import BenchError
from teachers.lift import project


def _points(folder, label_file, labels, n=200, seed=0, label_shape=None):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    coord = np.c_[rng.uniform(-1, 1, (n, 2)), np.full(n, 3.0)].astype(np.float32)  # a plane 3 m ahead
    np.save(folder / "coord.npy", coord)
    np.save(folder / "color.npy", rng.integers(0, 255, (n, 3), dtype=np.uint8))
    np.save(folder / "normal.npy", np.tile([0, 0, -1], (n, 1)).astype(np.float32))
    lab = np.resize(np.asarray(labels, dtype=np.int16), n)
    np.save(folder / label_file, lab.reshape(label_shape or (n,)))
    return coord


def _scannet_frames(fdir, n_frames=4, bad=(1,)):
    """SensReader export: colour 1296x968 / depth 640x480 with their own intrinsics; camera at the origin
    looking along +z, so the fixture plane at z=3 fills the view."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (fdir / sub).mkdir(parents=True)
    kc = np.array([[1170.2, 0, 647.8, 0], [0, 1170.2, 483.8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    kd = np.array([[577.6, 0, 318.9, 0], [0, 577.6, 238.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(fdir / "intrinsic" / "intrinsic_color.txt", kc)
    np.savetxt(fdir / "intrinsic" / "intrinsic_depth.txt", kd)
    for i in range(n_frames):
        Image.fromarray(np.full((968, 1296, 3), 40 * i, np.uint8)).save(fdir / "color" / f"{i}.jpg")
        Image.fromarray(np.full((480, 640), 3000, np.uint16)).save(fdir / "depth" / f"{i}.png")
        pose = np.eye(4)
        pose[0, 3] = 0.01 * i
        if i in bad:
            pose[:] = -np.inf
        np.savetxt(fdir / "pose" / f"{i}.txt", pose)


@pytest.fixture
def scannet_root(tmp_path):
    root = tmp_path / "scannet"
    for split, scenes in (("train", ["scene0000_00", "scene0001_00"]), ("val", ["scene0002_00"])):
        for s in scenes:
            # ScanNet-20 ids: 0 wall, 4 chair, 12 desk (-> table), 10 picture (-> ignore), -1 ignore
            _points(root / split / s, "segment20.npy", [0, 4, 12, 10, -1])
    _scannet_frames(root / "frames" / "scene0002_00")
    return root


def test_scannet_reading_mapping_and_views(scannet_root, caplog):
    ds = get_dataset("scannet", root=str(scannet_root))
    assert ds.scene_names("train") == ["train/scene0000_00", "train/scene0001_00"]
    assert ds.scene_names("train", 1) == ["train/scene0000_00"]
    assert ds.scene_names("test") == ["val/scene0002_00"]  # no public test labels: val serves as test
    s = ds.load("val/scene0002_00")
    assert s.label[:5].tolist() == [CLASS_ID["wall"], CLASS_ID["chair"], CLASS_ID["table"], IGNORE, IGNORE]
    assert CLASS_ID["ceiling"] not in ds.classes and CLASS_ID["table"] in ds.classes
    with caplog.at_level(logging.INFO):
        s = ds.load("val/scene0002_00")
    assert len(s.views) == 3  # frame 1 had an inf pose
    assert "skipped 1 of 4 frames" in caplog.text
    v = s.views[0]
    assert v.image.shape == (240, 320, 3) and v.depth.shape == (240, 320)
    assert np.allclose(v.depth[100:140, 100:220], 3.0)  # depth resampled into the colour frame
    # lifting through real-format poses: the plane at 3 m in front of the camera is seen
    u, vv, seen = project(s.coord, v, tol=0.05)
    assert seen.mean() > 0.9
    stride = get_dataset("scannet", root=str(scannet_root), frame_stride=2).load("val/scene0002_00")
    assert len(stride.views) == 2


def test_scannet_frames_with_a_teacher(scannet_root):
    from teachers import build_teacher

    ds = get_dataset("scannet", root=str(scannet_root), frame_count=2)
    s = ds.load("val/scene0002_00")
    assert len(s.views) == 2
    feat, mask = build_teacher("synth2d").point_features(s)
    assert feat.shape == (s.num_points, 64) and mask.mean() > 0.9


def test_s3dis_areas_and_label_shape(tmp_path):
    root = tmp_path / "s3dis"
    for area in (1, 2, 5):
        _points(root / f"Area_{area}" / "office_1", "segment.npy", [0, 1, 2, 3, 10, 12], label_shape=(200, 1))
    ds = get_dataset("s3dis", root=str(root))
    assert ds.scene_names("test") == ["Area_5/office_1"]
    assert ds.scene_names("train") == ["Area_1/office_1", "Area_2/office_1"]
    s = ds.load("Area_5/office_1")
    # S3DIS-13: 0 ceiling, 1 floor, 2 wall, 3 beam (ignore), 10 bookcase, 12 clutter
    assert s.label[:6].tolist() == [CLASS_ID["ceiling"], CLASS_ID["floor"], CLASS_ID["wall"], IGNORE,
                                    CLASS_ID["bookshelf"], CLASS_ID["clutter"]]
    assert s.views == []
    from teachers import build_teacher

    with pytest.raises(BenchError, match="no paired views"):
        build_teacher("synth2d").point_features(s)


def test_matterport_with_own_views_layout(tmp_path):
    from bench.data.scene import View, write_scene

    root = tmp_path / "mp"
    _points(root / "test" / "house_a", "segment.npy", [20, 1, 2])
    ds = get_dataset("matterport3d", root=str(root))
    s = ds.load("test/house_a")
    assert s.label[:3].tolist() == [CLASS_ID["ceiling"], CLASS_ID["floor"], CLASS_ID["cabinet"]]
    k = np.array([[100, 0, 63.5], [0, 100, 47.5], [0, 0, 1]], np.float32)
    s.views = [View(np.zeros((96, 128, 3), np.uint8), np.full((96, 128), 3.0, np.float32), k,
                    np.eye(4, dtype=np.float32))]
    s.label = np.zeros(s.num_points, np.int64)
    write_scene(s, tmp_path / "tmpscene")
    (root / "test" / "house_a" / "views").mkdir()
    for p in (tmp_path / "tmpscene" / "views").iterdir():
        p.rename(root / "test" / "house_a" / "views" / p.name)
    assert len(ds.load("test/house_a").views) == 1


@pytest.mark.parametrize("problem, message", [
    ("no_root", "needs its data root"),
    ("missing_split", "no 'val' split"),
    ("nan", "NaN/inf coordinates"),
    ("label_range", "labels outside"),
    ("empty", "no points"),
    ("missing_label", "segment20.npy: file missing"),
    ("missing_pose", "pose missing for frame"),
    ("too_many", "asked for 5 train scenes"),
])
def test_malformed_real_inputs(scannet_root, problem, message, monkeypatch):
    monkeypatch.delenv("TTT_BENCH_DATA_SCANNET", raising=False)
    scene = scannet_root / "train" / "scene0000_00"
    with pytest.raises(BenchError, match=message):
        if problem == "no_root":
            get_dataset("scannet")
        ds = get_dataset("scannet", root=str(scannet_root))
        if problem == "missing_split":  # ScanNet's test split is its val split
            import shutil

            shutil.rmtree(scannet_root / "val")
            ds.scene_names("test")
        elif problem == "too_many":
            ds.scene_names("train", 5)
        elif problem == "missing_pose":
            (scannet_root / "frames" / "scene0002_00" / "pose" / "2.txt").unlink()
            ds.load("val/scene0002_00")
        else:
            if problem == "nan":
                c = np.load(scene / "coord.npy")
                c[0] = np.nan
                np.save(scene / "coord.npy", c)
            elif problem == "label_range":
                np.save(scene / "segment20.npy", np.full(200, 25, np.int16))
            elif problem == "empty":
                for f in ("coord", "color", "normal"):
                    np.save(scene / f"{f}.npy", np.zeros((0, 3), np.float32))
            elif problem == "missing_label":
                (scene / "segment20.npy").unlink()
            ds.load("train/scene0000_00")


def test_data_root_from_environment(scannet_root, monkeypatch):
    monkeypatch.setenv("TTT_BENCH_DATA_SCANNET", str(scannet_root))
    assert get_dataset("scannet").scene_names("val") == ["val/scene0002_00"]
