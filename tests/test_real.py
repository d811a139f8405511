"""Real-dataset readers on small fixture scenes written by the tests in each layout."""

import logging

import numpy as np
import pytest
from PIL import Image

from bench.data import get_dataset
from bench.data.classes import CLASS_ID, IGNORE
from bench.data.geometry import project, resize_intrinsic
from bench.data.real import COLOR_CONSISTENCY_MIN, DEPTH_AGREEMENT_MIN, fit_view
from bench.errors import BenchError


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


def _scannet_frames(fdir, n_frames=4, bad=(1,), name=str):
    """SensReader export: colour 1296x968 / depth 640x480 with their own intrinsics; camera at the origin
    looking along +z, so the fixture plane at z=3 fills the view."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (fdir / sub).mkdir(parents=True)
    kc = np.array([[1170.2, 0, 647.8, 0], [0, 1170.2, 483.8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    kd = np.array([[577.6, 0, 318.9, 0], [0, 577.6, 238.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(fdir / "intrinsic" / "intrinsic_color.txt", kc)
    np.savetxt(fdir / "intrinsic" / "intrinsic_depth.txt", kd)
    for i in range(n_frames):
        Image.fromarray(np.full((968, 1296, 3), 30 * i % 256, np.uint8)).save(fdir / "color" / f"{name(i)}.jpg")
        Image.fromarray(np.full((480, 640), 3000, np.uint16)).save(fdir / "depth" / f"{name(i)}.png")
        pose = np.eye(4)
        pose[0, 3] = 0.01 * i
        if i in bad:
            pose[:] = -np.inf
        np.savetxt(fdir / "pose" / f"{name(i)}.txt", pose)


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
    assert "skipped 1 of 4 frames (1 non-finite (inf/NaN) pose:" in caplog.text and "pose/1.txt" in caplog.text
    assert s.diagnostics["views"] == 3 and s.diagnostics["frames_skipped"] == 1
    assert s.diagnostics["labelled"] == pytest.approx(0.6)
    assert {"depth_agreement", "color_consistency"} <= set(s.diagnostics)
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
    ("missing_intrinsic", "intrinsic_color.txt: file missing"),
    ("no_usable_frame", "scene0002_00: none of the 4 frames is usable"),
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
        elif problem == "missing_intrinsic":
            (scannet_root / "frames" / "scene0002_00" / "intrinsic" / "intrinsic_color.txt").unlink()
            ds.load("val/scene0002_00")
        elif problem == "no_usable_frame":
            for p in (scannet_root / "frames" / "scene0002_00" / "pose").iterdir():
                p.write_text("nan\n")
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


def test_scannet_bad_frames_are_skipped_and_counted(scannet_root, caplog):
    """A malformed pose file (issue 17: `pose/11.txt` holding text), a missing pose, a missing depth map
    and an unreadable colour image each cost one frame, counted and named in the log."""
    fdir = scannet_root / "frames" / "scene0002_00"
    _scannet_frames(fdir.parent / "big", n_frames=8, bad=())
    import shutil

    shutil.rmtree(fdir)
    (fdir.parent / "big").rename(fdir)
    (fdir / "pose" / "2.txt").write_text("this pose was never written\n")
    (fdir / "pose" / "3.txt").unlink()
    (fdir / "depth" / "4.png").unlink()
    (fdir / "color" / "5.jpg").write_bytes(b"truncated")
    (fdir / "pose" / "6.txt").write_text("1 2 3\n4 5 6\n")  # not 4x4
    ds = get_dataset("scannet", root=str(scannet_root), frame_stride=1)
    with caplog.at_level(logging.INFO):
        s = ds.load("val/scene0002_00")
    assert len(s.views) == 3 and s.diagnostics["frames_skipped"] == 5
    assert "skipped 5 of 8 frames" in caplog.text
    for bad in ("pose/2.txt", "pose/3.txt", "depth/4.png", "color/5.jpg", "pose/6.txt"):
        assert bad in caplog.text
    assert any(r.levelno == logging.WARNING and "skipped 5 of 8 frames" in r.getMessage() for r in caplog.records)


def test_scannet_zero_padded_frame_names(scannet_root):
    fdir = scannet_root / "frames" / "scene0002_00"
    import shutil

    shutil.rmtree(fdir)
    _scannet_frames(fdir, bad=(), name=lambda i: f"{i:05d}")  # color/00000.jpg, pose/00000.txt, depth/00000.png
    s = get_dataset("scannet", root=str(scannet_root), frame_stride=1).load("val/scene0002_00")
    assert len(s.views) == 4
    assert [float(v.cam_to_world[0, 3]) for v in s.views] == pytest.approx([0.0, 0.01, 0.02, 0.03])
    # poses written without padding next to zero-padded colour images pair by frame number
    for p in (fdir / "pose").iterdir():
        p.rename(p.with_name(f"{int(p.stem)}.txt"))
    assert len(get_dataset("scannet", root=str(scannet_root), frame_stride=1).load("val/scene0002_00").views) == 4


def test_scannet_resize_uses_the_half_pixel_convention(scannet_root):
    """Resizing 1296x968 frames to 320x240 scales the intrinsic like fit_view: pixel centres map as
    u' + 0.5 = (u + 0.5) * w / w0 (without the half-pixel term points land ~0.4 px off)."""
    s = get_dataset("scannet", root=str(scannet_root), frame_stride=1).load("val/scene0002_00")
    kc = np.loadtxt(scannet_root / "frames" / "scene0002_00" / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    k = s.views[0].intrinsic
    np.testing.assert_allclose(k, resize_intrinsic(kc, (968, 1296), (240, 320)), rtol=1e-6)
    fitted = fit_view(np.zeros((968, 1296, 3), np.uint8), np.zeros((968, 1296), np.float32), kc, np.eye(4),
                      (242, 324))  # the same scale factors through fit_view
    np.testing.assert_allclose(fitted.intrinsic[0], resize_intrinsic(kc, (968, 1296), (242, 324))[0], rtol=1e-6)
    # a point seen at the centre of original pixel (u, v) lands at the centre of the resized one
    u0, v0 = 1000.0, 100.0
    p = np.array([[(u0 - kc[0, 2]) / kc[0, 0] * 3, (v0 - kc[1, 2]) / kc[1, 1] * 3, 3.0]], np.float32)
    u, v, _ = project(p, s.views[0])
    assert u[0] == pytest.approx((u0 + 0.5) * 320 / 1296 - 0.5, abs=1e-3)
    assert v[0] == pytest.approx((v0 + 0.5) * 240 / 968 - 0.5, abs=1e-3)


@pytest.fixture(scope="module")
def synth_scene():
    from bench.data.synth import generate_scene

    return generate_scene("synth-s3dis", "test", 0, seed=0)


def _scannet_from_synth(root, scene, images, k_color):
    """A ScanNet scene built from a synthetic one: its points in Pointcept's layout, its views as
    SensReader frames with colour images ``images`` and colour intrinsic ``k_color``."""
    folder = root / "val" / "scene0005_00"
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", scene.coord)
    np.save(folder / "color.npy", np.round(scene.color * 255).astype(np.uint8))
    np.save(folder / "segment20.npy", np.zeros(scene.num_points, np.int16))
    fdir = root / "frames" / "scene0005_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (fdir / sub).mkdir(parents=True)
    np.savetxt(fdir / "intrinsic" / "intrinsic_color.txt", k_color)
    np.savetxt(fdir / "intrinsic" / "intrinsic_depth.txt", scene.views[0].intrinsic)
    for i, (v, img) in enumerate(zip(scene.views, images)):
        Image.fromarray(img).save(fdir / "color" / f"{i}.jpg", quality=95)
        Image.fromarray(np.round(v.depth * 1000).astype(np.uint16)).save(fdir / "depth" / f"{i}.png")
        np.savetxt(fdir / "pose" / f"{i}.txt", v.cam_to_world)
    return get_dataset("scannet", root=str(root), frame_stride=1, image_size=(96, 128))


def test_colour_consistency_catches_what_the_depth_check_cannot(tmp_path, synth_scene, caplog):
    """A wrong colour intrinsic or colour images paired with the wrong poses leave the depth agreement
    where it was (depth is resampled through the same intrinsic; depth and pose still belong together)
    but drop the colour consistency below its threshold, with a warning naming the scene."""
    images = [v.image for v in synth_scene.views]
    k = synth_scene.views[0].intrinsic.astype(np.float64)
    k_half = k.copy()
    k_half[:2] *= 0.5  # the intrinsic of an image half the size
    cases = {"correct": (images, k), "wrong intrinsic": (images, k_half),
             "mispaired": (images[1:] + images[:1], k)}
    diag, warned = {}, {}
    for name, (imgs, kc) in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO):
            s = _scannet_from_synth(tmp_path / name.replace(" ", "_"), synth_scene, imgs, kc).load("val/scene0005_00")
        assert len(s.views) == len(synth_scene.views)
        diag[name] = s.diagnostics
        warned[name] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert diag["correct"]["color_consistency"] > COLOR_CONSISTENCY_MIN + 0.3
    assert warned["correct"] == []
    for name in ("wrong intrinsic", "mispaired"):
        assert diag[name]["depth_agreement"] > DEPTH_AGREEMENT_MIN  # the depth check sees nothing wrong
        assert diag[name]["depth_agreement"] == pytest.approx(diag["correct"]["depth_agreement"], abs=0.05)
        assert diag[name]["color_consistency"] < COLOR_CONSISTENCY_MIN, name
        assert len(warned[name]) == 1 and "scannet/val/scene0005_00: colour consistency" in warned[name][0]


def test_all_ignore_scene_is_warned_by_name(scannet_root, caplog):
    np.save(scannet_root / "train" / "scene0001_00" / "segment20.npy", np.full(200, 10, np.int16))  # picture
    with caplog.at_level(logging.WARNING):
        s = get_dataset("scannet", root=str(scannet_root)).load("train/scene0001_00")
    assert s.diagnostics["labelled"] == 0.0
    assert "scene0001_00/segment20.npy: every point is labelled ignore after mapping" in caplog.text


# every scene file a run will read is checked before any work starts (issue 29, item 1)
REAL_GRID = """
name = "real"
pairs = ["scannet->scannet"]
backbones = [{{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }}]
seeds = [0]
train_scenes = 2
val_scenes = 0
test_scenes = 1
[data_options.scannet]
root = "{root}"
[train]
epochs = 1
[[methods]]
name = "source"
"""


def _break(scene, problem):
    if problem == "shape":
        np.save(scene / "coord.npy", np.zeros((200, 2), np.float32))
    elif problem == "nan":
        c = np.load(scene / "coord.npy")
        c[3] = np.nan
        np.save(scene / "coord.npy", c)
    elif problem == "label_range":
        np.save(scene / "segment20.npy", np.full(200, 99, np.int16))
    elif problem == "float_labels":
        np.save(scene / "segment20.npy", np.zeros(200, np.float32))
    elif problem == "empty":
        for f in ("coord", "color", "normal"):
            np.save(scene / f"{f}.npy", np.zeros((0, 3), np.float32))
    elif problem == "truncated":
        data = (scene / "color.npy").read_bytes()
        (scene / "color.npy").write_bytes(data[: len(data) // 2])
    elif problem == "missing":
        (scene / "segment20.npy").unlink()
    elif problem == "no_normals":
        (scene / "normal.npy").unlink()


@pytest.mark.parametrize("problem, file, message", [
    ("shape", "coord.npy", "expected shape (N,3), got (200, 2); export the scene again"),
    ("nan", "coord.npy", "1 points have NaN/inf coordinates"),
    ("label_range", "segment20.npy", "200 labels outside [-1, 19]"),
    ("float_labels", "segment20.npy", "labels must be integers, got float32; save them as int16"),
    ("empty", "coord.npy", "scene has no points"),
    ("truncated", "color.npy", "truncated or not a numpy array: export the scene again"),
    ("missing", "segment20.npy", "file missing; check the data root"),
    ("no_normals", "normal.npy", "features include 'normal'"),
])
def test_malformed_scenes_are_refused_before_the_run(scannet_root, tmp_path, problem, file, message):
    """A malformed scene of any kind is one BenchError naming the file and the fix before any work
    (it used to start the run, write an error row and exit 1); the other scenes' problems come with it."""
    from bench.grid import load_grid
    from bench.runner import run_grid

    grid = tmp_path / "real.toml"
    grid.write_text(REAL_GRID.format(root=scannet_root))
    scene = scannet_root / "train" / "scene0001_00"
    _break(scene, problem)
    out = tmp_path / "out"
    with pytest.raises(BenchError) as e:
        run_grid(load_grid(str(grid)), out)
    text = str(e.value)
    assert f"{scene / file}" in text and message in text, text
    assert text.count(str(scene)) == 1 and not out.exists()
