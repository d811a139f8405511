import logging

import numpy as np
import pytest
from PIL import Image

from bench.data.classes import NUM_CLASSES
from bench.data.scene import View, read_scene, write_scene
from bench.errors import BenchError


def _view():
    k = np.array([[50, 0, 31.5], [0, 50, 23.5], [0, 0, 1]], dtype=np.float32)
    return View(np.full((48, 64, 3), 100, np.uint8), np.full((48, 64), 1.5, np.float32), k,
                np.eye(4, dtype=np.float32), np.zeros((48, 64), np.int64))


def test_round_trip(tmp_path, tiny_scene):
    tiny_scene.views = [_view(), _view()]
    write_scene(tiny_scene, tmp_path / "s")
    back = read_scene(tmp_path / "s", "test", num_classes=NUM_CLASSES)
    np.testing.assert_array_equal(back.coord, tiny_scene.coord)
    np.testing.assert_array_equal(back.label, tiny_scene.label)
    np.testing.assert_allclose(back.color, tiny_scene.color, atol=1 / 255)
    assert len(back.views) == 2
    np.testing.assert_allclose(back.views[0].depth, 1.5, atol=1e-3)
    np.testing.assert_allclose(back.views[0].intrinsic, tiny_scene.views[0].intrinsic, atol=1e-5)


@pytest.mark.parametrize("problem, message", [
    ("nan", "NaN/inf coordinates"),
    ("shape", "expected shape \\(N,3\\)"),
    ("label_range", "labels outside"),
    ("label_count", "expected 600 labels"),
    ("missing_color", "color.npy: file missing"),
    ("empty", "no points"),
    ("corrupt", "cannot read as .npy"),
])
def test_malformed_inputs_name_the_file(tmp_path, tiny_scene, problem, message):
    d = write_scene(tiny_scene, tmp_path / "s")
    coord = np.load(d / "coord.npy")
    if problem == "nan":
        coord[3, 1] = np.nan
        np.save(d / "coord.npy", coord)
    elif problem == "shape":
        np.save(d / "coord.npy", coord[:, :2])
    elif problem == "label_range":
        lab = np.load(d / "segment.npy")
        lab[0] = 99
        np.save(d / "segment.npy", lab)
    elif problem == "label_count":
        np.save(d / "segment.npy", np.zeros(5, np.int16))
    elif problem == "missing_color":
        (d / "color.npy").unlink()
    elif problem == "empty":
        np.save(d / "coord.npy", np.zeros((0, 3), np.float32))
    elif problem == "corrupt":
        (d / "coord.npy").write_bytes(b"not numpy")
    with pytest.raises(BenchError, match=message) as e:
        read_scene(d, "test", label_map=np.arange(NUM_CLASSES) if problem == "label_range" else None,
                   num_classes=NUM_CLASSES)
    assert str(d) in str(e.value)


def test_bad_views_are_skipped_and_counted_and_no_usable_view_fails(tmp_path, tiny_scene, caplog):
    from bench.data.scene import FrameSkips

    tiny_scene.views = [_view() for _ in range(6)]
    d = write_scene(tiny_scene, tmp_path / "s")
    v = d / "views"
    (v / "00001_pose.txt").write_text("inf inf inf inf\n" * 4)  # non-finite pose
    (v / "00002_pose.txt").write_text("this is not a pose\n")  # unreadable pose
    (v / "00003_depth.png").unlink()  # depth missing
    (v / "00004.png").write_bytes(b"not a png")  # unreadable image
    skips = FrameSkips("s")
    with caplog.at_level(logging.INFO):
        views = read_scene(d, "test").views
        from bench.data.scene import read_views

        assert len(read_views(v, skips)) == 2
    assert len(views) == 2
    assert skips.count == 4 and set(skips.reasons) == {"non-finite (inf/NaN) pose", "unreadable pose",
                                                       "depth missing", "unreadable image or depth"}
    assert "skipped 4 of 6 views" in caplog.text
    for name in ("00001_pose.txt", "00002_pose.txt", "00003_depth.png", "00004.png"):
        assert name in caplog.text  # the log names every bad file
    (v / "00000_pose.txt").unlink()
    (v / "00005_depth.png").write_bytes(b"")
    with pytest.raises(BenchError, match="views: none of the 6 views is usable .*00000_pose.txt"):
        read_scene(d, "test")
    (v / "intrinsic.txt").unlink()
    with pytest.raises(BenchError, match="intrinsic.txt: file missing"):
        read_scene(d, "test")


def test_scene_diagnostics_default_and_all_ignore_warning(tmp_path, tiny_scene, caplog):
    assert tiny_scene.diagnostics == {}
    tiny_scene.label[:] = -1
    d = write_scene(tiny_scene, tmp_path / "s")
    with caplog.at_level(logging.WARNING):
        read_scene(d, "test")
    assert "segment.npy: every point is labelled ignore" in caplog.text


def test_depth_of_another_resolution_is_resized(tmp_path, tiny_scene):
    tiny_scene.views = [_view()]
    d = write_scene(tiny_scene, tmp_path / "s")
    Image.fromarray(np.full((24, 32), 2000, np.uint16)).save(d / "views" / "00000_depth.png")
    v = read_scene(d, "test").views[0]
    assert v.depth.shape == (48, 64)
    np.testing.assert_allclose(v.depth, 2.0)


def test_write_is_atomic_on_failure(tmp_path, tiny_scene):
    write_scene(tiny_scene, tmp_path / "s")
    bad = tiny_scene
    bad.views = [_view(), View(**{**_view().__dict__, "intrinsic": np.eye(3, dtype=np.float32)})]
    with pytest.raises(BenchError, match="share one intrinsic"):
        write_scene(bad, tmp_path / "s")
    assert (tmp_path / "s" / "coord.npy").is_file()  # the earlier scene is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]
