"""Readers for real datasets in Pointcept's preprocessed per-scene layout: ``scannet``, ``s3dis``,
``matterport3d``. Labels are mapped to the shared class list (``bench.data.classes``).

Data root: the dataset option ``root`` (grid ``[data_options.NAME] root = ...`` or
``--data-root NAME=PATH``) or the environment variable ``TTT_BENCH_DATA_<NAME>`` (e.g.
``TTT_BENCH_DATA_SCANNET``). Layouts::

    scannet:       ROOT/{train,val,test}/sceneXXXX_XX/{coord,color,normal,segment20}.npy
    matterport3d:  ROOT/{train,val,test}/SCENE/{coord,color,normal,segment}.npy
    s3dis:         ROOT/Area_N/ROOM/{coord,color,normal,segment}.npy   (test/val = Area_{test_area},
                                                                          train = the other areas)

A split list file ``ROOT/splits/{split}.txt`` (one scene path relative to ROOT per line) overrides
the folder convention. Scenes are taken in sorted order; ``count = 0`` takes all of a split.

Paired views: a scene folder may hold a ``views/`` folder in the harness's own layout (see
``bench.data.scene``); otherwise each reader reads its dataset's released image format:

* ScanNet: frames exported by ScanNet's SensReader under ``frames`` (default ``ROOT/frames``):
  ``frames/SCENE/color/N.jpg``, ``depth/N.png`` (uint16 mm), ``pose/N.txt`` (camera-to-world; frames
  whose pose has inf/NaN are skipped and counted in the log), ``intrinsic/intrinsic_color.txt`` and
  ``intrinsic_depth.txt``. Colour (1296x968) and depth (640x480) differ in resolution and intrinsics:
  the colour image is resized to ``image_size`` and the depth map is resampled into that colour frame
  through both intrinsics.
* S3DIS: the Stanford 2D-3D-Semantics release under ``images`` (default ``ROOT/2d3ds``, or
  ``$TTT_BENCH_DATA_S3DIS_IMAGES``): ``area_N/data/{rgb,depth,pose}/camera_<uuid>_<room>_frame_<k>_domain_
  {rgb.png,depth.png,pose.json}`` (Area 5 may be split into ``area_5a``/``area_5b``). Pose JSON:
  ``camera_rt_matrix`` = 3x4 world-to-camera [R|t] (OpenCV axes), ``camera_k_matrix`` = 3x3; depth =
  uint16 / 512 m, 65535 = no reading. The poses are in the raw area frame; Pointcept's S3DIS may be
  rotated per room (``--align_angle``: a multiple of 90 degrees about the room's centre). ``align``:
  ``"auto"`` (default) tries the four rotations about the bounding-box centre and keeps the one whose
  projected points agree best with the depth maps; ``"none"`` or an angle in degrees fixes it.
* Matterport3D: the undistorted release under ``images`` (default ``ROOT/matterport``, or
  ``$TTT_BENCH_DATA_MATTERPORT3D_IMAGES``): ``HOUSE/undistorted_camera_parameters/HOUSE.conf`` (also
  ``HOUSE/HOUSE/...`` as unzipped), ``undistorted_color_images/*.jpg``, ``undistorted_depth_images/*.png``
  (uint16, 0.25 mm, 0 = no reading). The scene's house is its folder name up to the first ``_``
  (Pointcept's ``HOUSE_regionK``). The .conf file gives ``intrinsics_matrix`` lines and ``scan DEPTH
  COLOR <16 numbers>`` lines, a camera-to-world matrix of a camera looking along -z with +y up and
  pixel coordinates from the bottom-left corner; the reader converts both to the harness's
  convention (OpenCV axes, top-left origin). Images whose camera centre lies in the scene's bounding
  box (grown by ``region_margin`` metres) belong to the scene.

All readers sub-sample frames by ``frame_stride`` (every n-th valid frame) or ``frame_count`` (k
frames chosen for coverage: greedy farthest selection over camera position and viewing direction),
fit S3DIS/Matterport3D images inside ``image_size`` (aspect kept, intrinsics scaled) and log how many
projected points lie on the depth surfaces (of the points not hidden behind them; below 70% it warns
that poses and points are probably in different frames). A scene without usable images gets no
views, and TTT-KD cells on it fail saying so.
"""

from __future__ import annotations

import json
import logging
import os
import re
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.classes import MAPPINGS, NUM_CLASSES, lookup_table, mapped_classes
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene, View, read_depth, read_image, read_matrix, read_points, read_views
from bench.errors import BenchError

log = logging.getLogger(__name__)


class PointceptDataset(Dataset):
    label_file = "segment.npy"

    def __init__(self, name: str, root: str | None = None, frames: str | None = None, frame_stride: int = 0,
                 frame_count: int = 10, image_size: tuple[int, int] = (240, 320), test_area: int = 5, **_):
        env = f"TTT_BENCH_DATA_{name.upper()}"
        root = root or os.environ.get(env)
        if not root:
            raise BenchError(f"dataset '{name}' needs its data root: pass --data-root {name}=PATH, set "
                             f"[data_options.{name}] root = PATH in the grid, or set ${env}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BenchError(f"dataset '{name}': data root {self.root} is not a folder")
        self.name = name
        self.table = lookup_table(MAPPINGS[name])
        self.classes = mapped_classes(MAPPINGS[name])
        self.frames = Path(frames).expanduser() if frames else self.root / "frames"
        self.frame_stride, self.frame_count = frame_stride, frame_count
        self.image_size, self.test_area = tuple(image_size), test_area

    # -- scenes
    def _split_dirs(self, split: str) -> list[Path]:
        lst = self.root / "splits" / f"{split}.txt"
        if lst.is_file():
            return [self.root / line.strip() for line in lst.read_text().splitlines() if line.strip()]
        d = self.root / split
        if not d.is_dir():
            raise BenchError(f"{self.name}: no '{split}' split under {self.root} (expected {d}/ or "
                             f"{lst}); see the README on real data layouts")
        return sorted(p for p in d.iterdir() if p.is_dir())

    def scene_names(self, split: str, count: int | None = None) -> list[str]:
        self._check_split(split)
        dirs = self._split_dirs(split)
        if not dirs:
            raise BenchError(f"{self.name}: split '{split}' under {self.root} has no scenes")
        if count and count > len(dirs):
            raise BenchError(f"{self.name}: asked for {count} {split} scenes, {self.root} has {len(dirs)}")
        names = [str(p.relative_to(self.root)) for p in dirs]
        return names[:count] if count else names

    def load(self, name: str, with_views: bool = True) -> Scene:
        folder = self.root / name
        coord, color, normal, label = read_points(folder, self.label_file, self.table)
        views = self.views(folder, coord) if with_views else []
        scene = Scene(folder.name, self.name, coord, color, label, normal, views)
        return scene.validate(str(folder), NUM_CLASSES)

    def views(self, folder: Path, coord: np.ndarray) -> list[View]:
        if (folder / "views").is_dir():
            return read_views(folder / "views")
        views = self.released_views(folder, coord)
        if views:
            agree = depth_agreement(coord, views)
            log.info("%s/%s: %d views; %.0f%% of the unoccluded points they see lie on their depth surface",
                     self.name, folder.name, len(views), 100 * agree)
            if agree < 0.7:
                log.warning("%s/%s: only %.0f%% of unoccluded points lie on the depth surface: the poses and "
                            "the point cloud are probably in different frames", self.name, folder.name, 100 * agree)
        return views

    def released_views(self, folder: Path, coord: np.ndarray) -> list[View]:
        """Views from the dataset's own released image format (none by default)."""
        return []

    def _images_root(self, images: str | None, default: str) -> Path | None:
        images = images or os.environ.get(f"TTT_BENCH_DATA_{self.name.upper()}_IMAGES")
        p = Path(images).expanduser() if images else self.root / default
        if images and not p.is_dir():
            raise BenchError(f"{self.name}: images folder {p} is not a folder")
        if not p.is_dir():
            log.info("%s: no images at %s (give [data_options.%s] images = PATH): scenes without a views/ "
                     "folder have no views, so teacher-based cells on them fail", self.name, p, self.name)
            return None
        return p

    def select(self, poses: list[np.ndarray]) -> list[int]:
        """Indices of the frames to use: every ``frame_stride``-th, else ``frame_count`` for coverage."""
        if self.frame_stride:
            return list(range(0, len(poses), self.frame_stride))
        return select_for_coverage(poses, self.frame_count)

    def fingerprint(self) -> dict:
        return {"dataset": self.name, "root": str(self.root), "frames": str(self.frames),
                "frame_stride": self.frame_stride, "frame_count": self.frame_count,
                "image_size": list(self.image_size), "test_area": self.test_area,
                **{k: str(v) for k, v in self.extra_fingerprint().items()}}

    def extra_fingerprint(self) -> dict:
        return {}


class ScanNet(PointceptDataset):
    """ScanNet's test split has no public labels, so its val split serves as the test split."""

    label_file = "segment20.npy"

    def _split_dirs(self, split: str) -> list[Path]:
        if split == "test" and not (self.root / "splits" / "test.txt").is_file():
            split = "val"
        return super()._split_dirs(split)

    def released_views(self, folder: Path, coord: np.ndarray) -> list[View]:
        fdir = self.frames / folder.name
        if not fdir.is_dir():
            return []
        return read_scannet_frames(fdir, self.image_size, self.select)


class S3DIS(PointceptDataset):
    """S3DIS rooms; views from the 2D-3D-S release (see the module docstring)."""

    def __init__(self, name: str, images: str | None = None, align: str | float = "auto", **kw):
        super().__init__(name, **kw)
        self.images = self._images_root(images, "2d3ds")
        if not (align in ("auto", "none") or isinstance(align, int | float)):
            raise BenchError(f"s3dis: align must be 'auto', 'none' or an angle in degrees, got {align!r}")
        self.align = align

    def extra_fingerprint(self):
        return {"images": self.images, "align": self.align}

    def released_views(self, folder: Path, coord: np.ndarray) -> list[View]:
        if self.images is None:
            return []
        area, room = folder.parent.name, folder.name
        m = re.fullmatch(r"Area_(\d+)", area)
        if not m:
            return []
        frames = [f for a in _2d3ds_areas(self.images, int(m.group(1))) for f in _2d3ds_index(a).get(room, [])]
        views = read_2d3ds_frames(frames, self.image_size, self.select, f"s3dis/{area}/{room}")
        return align_views(views, coord, self.align) if views else views

    def _split_dirs(self, split: str) -> list[Path]:
        if (self.root / "splits" / f"{split}.txt").is_file():
            return super()._split_dirs(split)
        areas = sorted(p for p in self.root.glob("Area_*") if p.is_dir())
        if not areas:
            raise BenchError(f"s3dis: no Area_N folders under {self.root}")
        test = f"Area_{self.test_area}"
        chosen = [a for a in areas if (a.name == test) == (split in ("val", "test"))]
        return sorted(r for a in chosen for r in a.iterdir() if r.is_dir())


def fit_view(image: np.ndarray, depth: np.ndarray, k: np.ndarray, pose: np.ndarray, size) -> View:
    """A view resized to fit inside ``size`` = (H, W) with its aspect ratio kept: colour bilinear,
    depth nearest (no mixing across edges), intrinsics scaled with the pixel grid."""
    h0, w0 = image.shape[:2]
    if depth.shape != (h0, w0):
        raise BenchError(f"depth {depth.shape} and colour {(h0, w0)} differ in size")
    s = min(size[0] / h0, size[1] / w0)
    h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
    k = k.astype(np.float64).copy()
    # pixel centres at integer coordinates: u' + 0.5 = (u + 0.5) * w / w0
    k[0, :] *= w / w0
    k[1, :] *= h / h0
    k[0, 2] += 0.5 * w / w0 - 0.5
    k[1, 2] += 0.5 * h / h0 - 0.5
    if (h, w) != (h0, w0):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        depth = np.asarray(Image.fromarray(depth.astype(np.float32)).resize((w, h), Image.NEAREST))
    return View(image, depth.astype(np.float32), k.astype(np.float32), pose.astype(np.float32))


def depth_agreement(coord: np.ndarray, views: list[View], tol: float = 0.1, max_points: int = 20000) -> float:
    """How well poses and points share a frame: of the points that project onto a valid depth reading
    and are not hidden behind it, the fraction lying on the depth surface (within ``tol`` m), over all
    views. A point in front of the surface would be in free space the camera saw through: near 1 for
    matching poses, low for poses in another frame. Occluded points (behind the surface) do not count."""
    from teachers.lift import project_depth

    idx = np.linspace(0, len(coord) - 1, min(len(coord), max_points)).astype(np.int64)
    on = front = 0
    for v in views:
        _, _, z, d, inside = project_depth(coord[idx], v)
        valid = inside & (d > 0)
        on += int((valid & (np.abs(z - d) < tol)).sum())
        front += int((valid & (z <= d - tol)).sum())
    return on / (on + front) if on + front else 0.0


def rotation_about_centre(coord: np.ndarray, degrees: float) -> np.ndarray:
    """4x4 rotation about the vertical axis through the centre of the points' bounding box."""
    a = np.deg2rad(degrees)
    r = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    c = (coord.min(0) + coord.max(0)).astype(np.float64) / 2
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = r, c - r @ c
    return t


def align_views(views: list[View], coord: np.ndarray, align: str | float) -> list[View]:
    """Move views from the raw frame into the points' frame (S3DIS rooms may be rotated by a multiple of
    90 degrees about their centre): 'none', an angle, or 'auto' = the best-agreeing of 0/90/180/270."""
    if align == "none":
        return views

    def moved(deg):
        t = rotation_about_centre(coord, deg)
        return [View(v.image, v.depth, v.intrinsic, (t @ v.cam_to_world.astype(np.float64)).astype(np.float32))
                for v in views]

    if align != "auto":
        return moved(float(align))
    best = max((0, 90, 180, 270), key=lambda d: depth_agreement(coord, moved(d), max_points=5000))
    if best:
        log.info("views rotated by %d degrees about the room centre to match the points", best)
    return moved(best)


_2D3DS_NAME = re.compile(r"camera_([0-9a-zA-Z]+)_(.+)_frame_(\d+)_domain_pose\.json")


def _2d3ds_areas(root: Path, n: int) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(rf"area_{n}[ab]?", p.name, re.I))


@cache
def _2d3ds_index(area: Path) -> dict[str, list[tuple[int, str, Path]]]:
    """room -> sorted frames (frame number, camera uuid, pose file) of one 2D-3D-S area folder."""
    rooms: dict[str, list] = {}
    pdir = area / "data" / "pose"
    if not pdir.is_dir():
        log.warning("%s: no data/pose folder; this area has no views", area)
        return rooms
    for p in pdir.iterdir():
        m = _2D3DS_NAME.fullmatch(p.name)
        if m:
            rooms.setdefault(m.group(2), []).append((int(m.group(3)), m.group(1), p))
    return {r: sorted(f, key=lambda x: (x[1], x[0])) for r, f in rooms.items()}


def read_2d3ds_frames(frames: list[tuple[int, str, Path]], image_size, select, where: str) -> list[View]:
    """2D-3D-S frames -> views: pose JSON (world-to-camera [R|t], K), rgb PNG, depth PNG (1/512 m).
    Frames with an unreadable or non-finite pose, or a missing image, are skipped and counted."""
    good, skipped = [], 0
    for _, _, pose_path in frames:
        stem = pose_path.name[: -len("pose.json")]
        rgb = pose_path.parent.parent / "rgb" / f"{stem}rgb.png"
        dep = pose_path.parent.parent / "depth" / f"{stem}depth.png"
        try:
            meta = json.loads(pose_path.read_text())
            rt = np.asarray(meta["camera_rt_matrix"], dtype=np.float64)
            k = np.asarray(meta["camera_k_matrix"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.debug("%s: unreadable pose (%s)", pose_path, e)
            skipped += 1
            continue
        if rt.shape != (3, 4) or k.shape != (3, 3) or not (np.isfinite(rt).all() and np.isfinite(k).all()) \
                or not (rgb.is_file() and dep.is_file()):
            skipped += 1
            continue
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rt[:, :3].T, -rt[:, :3].T @ rt[:, 3]
        good.append((c2w, k, rgb, dep))
    if skipped:
        log.info("%s: skipped %d of %d 2D-3D-S frames (unreadable/non-finite pose or missing image)", where,
                 skipped, len(frames))
    views = []
    for i in select([g[0] for g in good]):
        c2w, k, rgb, dep = good[i]
        raw = read_depth(dep, scale=1.0)
        depth = np.where(raw == 65535, 0.0, raw / 512.0).astype(np.float32)
        views.append(fit_view(read_image(rgb), depth, k, c2w, image_size))
    return views


def read_scannet_frames(fdir: Path, image_size, select) -> list[View]:
    """ScanNet SensReader frames -> views at ``image_size`` (H, W) with depth in the colour frame;
    ``select`` picks frame indices from the valid frames' poses (``PointceptDataset.select``)."""
    kc = read_matrix(fdir / "intrinsic" / "intrinsic_color.txt", (3, 3)).astype(np.float64)
    kd = read_matrix(fdir / "intrinsic" / "intrinsic_depth.txt", (3, 3)).astype(np.float64)
    ids = sorted(int(p.stem) for p in (fdir / "color").glob("*.jpg") if p.stem.isdigit())
    if not ids:
        raise BenchError(f"{fdir / 'color'}: no N.jpg frames")
    poses, valid, bad = {}, [], 0
    for i in ids:
        pp = fdir / "pose" / f"{i}.txt"
        if not pp.is_file():
            raise BenchError(f"{pp}: pose missing for frame {i}; re-export the frames")
        pose = np.loadtxt(pp)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            bad += 1
            continue
        poses[i] = pose.astype(np.float32)
        valid.append(i)
    if bad:
        log.info("%s: skipped %d of %d frames with invalid (inf/NaN) poses", fdir, bad, len(ids))
    chosen = [valid[j] for j in select([poses[i] for i in valid])]
    h, w = image_size
    views = []
    for i in chosen:
        img = read_image(fdir / "color" / f"{i}.jpg")
        sx, sy = w / img.shape[1], h / img.shape[0]
        k = kc.copy()
        k[0] *= sx
        k[1] *= sy
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        dpath = fdir / "depth" / f"{i}.png"
        if not dpath.is_file():
            raise BenchError(f"{dpath}: depth missing for frame {i}")
        with Image.open(dpath) as im:
            raw = np.asarray(im, dtype=np.float32) / 1000.0
        # resample depth into the colour frame: colour pixel -> ray -> depth pixel (nearest)
        v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        x, y = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
        ud = np.round(kd[0, 0] * x + kd[0, 2]).astype(int)
        vd = np.round(kd[1, 1] * y + kd[1, 2]).astype(int)
        ok = (ud >= 0) & (ud < raw.shape[1]) & (vd >= 0) & (vd < raw.shape[0])
        depth = np.zeros((h, w), np.float32)
        depth[ok] = raw[vd[ok], ud[ok]]
        views.append(View(img, depth, k.astype(np.float32), poses[i]))
    return views


def select_for_coverage(poses: list[np.ndarray], k: int) -> list[int]:
    """Greedy farthest-point selection of ``k`` poses by camera position and viewing direction."""
    if not poses:
        return []
    if k >= len(poses):
        return list(range(len(poses)))
    feat = np.stack([np.r_[p[:3, 3], p[:3, 2]] for p in poses])
    chosen = [0]
    d = np.linalg.norm(feat - feat[0], axis=1)
    while len(chosen) < k:
        j = int(np.argmax(d))
        chosen.append(j)
        d = np.minimum(d, np.linalg.norm(feat - feat[j], axis=1))
    return sorted(chosen)


@DATASETS.register("scannet", description="ScanNet v2 (Pointcept layout, segment20), SensReader frames as views")
def _scannet(**kw) -> ScanNet:
    return ScanNet("scannet", **kw)


@DATASETS.register("s3dis", description="S3DIS (Pointcept layout, Area_N/ROOM), test area 5, 2D-3D-S images")
def _s3dis(**kw) -> S3DIS:
    return S3DIS("s3dis", **kw)


class Matterport3D(PointceptDataset):
    """Matterport3D regions; views from the undistorted release (see the module docstring)."""

    def __init__(self, name: str, images: str | None = None, region_margin: float = 0.5, **kw):
        super().__init__(name, **kw)
        self.images = self._images_root(images, "matterport")
        self.region_margin = region_margin

    def extra_fingerprint(self):
        return {"images": self.images, "region_margin": self.region_margin}

    def released_views(self, folder: Path, coord: np.ndarray) -> list[View]:
        if self.images is None:
            return []
        house = folder.name.split("_")[0]
        conf = next((p for p in (self.images / house / "undistorted_camera_parameters" / f"{house}.conf",
                                 self.images / house / house / "undistorted_camera_parameters" / f"{house}.conf")
                     if p.is_file()), None)
        if conf is None:
            log.info("matterport3d/%s: no %s/undistorted_camera_parameters/%s.conf under %s; no views",
                     folder.name, house, house, self.images)
            return []
        lo, hi = coord.min(0) - self.region_margin, coord.max(0) + self.region_margin
        scans = [s for s in parse_matterport_conf(conf) if np.all((s[3][:3, 3] >= lo) & (s[3][:3, 3] <= hi))]
        views = []
        for i in self.select([s[3] for s in scans]):
            views.append(read_matterport_scan(conf.parent.parent, *scans[i], image_size=self.image_size))
        return views


def parse_matterport_conf(path: Path) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(depth file, colour file, K, camera-to-world) of every ``scan`` line with a finite pose, as
    written (OpenGL-style camera, bottom-left pixel origin); malformed lines raise, naming the line."""
    scans, k, skipped = [], None, 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "intrinsics_matrix":
                k = np.array(parts[1:10], dtype=np.float64).reshape(3, 3)
            elif parts[0] == "scan":
                if k is None:
                    raise ValueError("scan before any intrinsics_matrix")
                if len(parts) != 19:
                    raise ValueError(f"expected 'scan DEPTH COLOR' and 16 numbers, got {len(parts) - 1} fields")
                pose = np.array(parts[3:19], dtype=np.float64).reshape(4, 4)
                if np.isfinite(pose).all():
                    scans.append((parts[1], parts[2], k, pose))
                else:
                    skipped += 1
        except ValueError as e:
            raise BenchError(f"{path}:{n}: malformed line ({e}); expected the Matterport3D undistorted "
                             "camera parameter format") from None
    if skipped:
        log.info("%s: skipped %d scans with non-finite poses", path, skipped)
    return scans


def read_matterport_scan(house_dir: Path, depth_name: str, color_name: str, k: np.ndarray, c2w_gl: np.ndarray,
                         image_size=(240, 320)) -> View:
    """One undistorted Matterport image as a view in OpenCV convention (x right, y down, z forward,
    top-left pixel origin): flip the camera's y and z axes and mirror cy about the image height."""
    image = read_image(house_dir / "undistorted_color_images" / color_name)
    dpath = house_dir / "undistorted_depth_images" / depth_name
    if not dpath.is_file():
        raise BenchError(f"{dpath}: depth image missing for {color_name}")
    depth = read_depth(dpath, scale=4000.0)
    kc = k.copy()
    kc[1, 2] = image.shape[0] - 1 - k[1, 2]
    return fit_view(image, depth, kc, c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0]), image_size)


@DATASETS.register("matterport3d", description="Matterport3D (Pointcept layout, 21 classes), undistorted images")
def _matterport(**kw) -> Matterport3D:
    return Matterport3D("matterport3d", **kw)
