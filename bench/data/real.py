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
``bench.data.scene``). For ScanNet, frames exported by ScanNet's SensReader are read directly from
``frames`` (default ``ROOT/frames``): ``frames/SCENE/color/N.jpg``, ``depth/N.png`` (uint16 mm),
``pose/N.txt`` (camera-to-world; frames whose pose has inf/NaN are skipped and counted in the log),
``intrinsic/intrinsic_color.txt`` and ``intrinsic_depth.txt``. Colour (1296x968) and depth (640x480)
differ in resolution and intrinsics: the colour image is resized to ``image_size`` and the depth map is
resampled into that colour frame through both intrinsics. Frames are sub-sampled by ``frame_stride``
(every n-th valid frame) or ``frame_count`` (k frames chosen for coverage: greedy farthest selection
over camera position and viewing direction). S3DIS and Matterport3D in Pointcept's layout have no
images; give them a ``views/`` folder (e.g. exported from 2D-3D-S or Matterport's undistorted
images and poses) to use image teachers, otherwise TTT-KD cells on them fail saying so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.classes import MAPPINGS, NUM_CLASSES, lookup_table, mapped_classes
from bench.data.datasets import DATASETS, Dataset
from bench.data.scene import Scene, View, read_image, read_matrix, read_points, read_views
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
        views = self.views(folder) if with_views else []
        scene = Scene(folder.name, self.name, coord, color, label, normal, views)
        return scene.validate(str(folder), NUM_CLASSES)

    def views(self, folder: Path) -> list[View]:
        if (folder / "views").is_dir():
            return read_views(folder / "views")
        return []

    def fingerprint(self) -> dict:
        return {"dataset": self.name, "root": str(self.root), "frames": str(self.frames),
                "frame_stride": self.frame_stride, "frame_count": self.frame_count,
                "image_size": list(self.image_size), "test_area": self.test_area}


class ScanNet(PointceptDataset):
    """ScanNet's test split has no public labels, so its val split serves as the test split."""

    label_file = "segment20.npy"

    def _split_dirs(self, split: str) -> list[Path]:
        if split == "test" and not (self.root / "splits" / "test.txt").is_file():
            split = "val"
        return super()._split_dirs(split)

    def views(self, folder: Path) -> list[View]:
        if (folder / "views").is_dir():
            return read_views(folder / "views")
        fdir = self.frames / folder.name
        if not fdir.is_dir():
            return []
        return read_scannet_frames(fdir, self.image_size, self.frame_stride, self.frame_count)


class S3DIS(PointceptDataset):
    def _split_dirs(self, split: str) -> list[Path]:
        if (self.root / "splits" / f"{split}.txt").is_file():
            return super()._split_dirs(split)
        areas = sorted(p for p in self.root.glob("Area_*") if p.is_dir())
        if not areas:
            raise BenchError(f"s3dis: no Area_N folders under {self.root}")
        test = f"Area_{self.test_area}"
        chosen = [a for a in areas if (a.name == test) == (split in ("val", "test"))]
        return sorted(r for a in chosen for r in a.iterdir() if r.is_dir())


def read_scannet_frames(fdir: Path, image_size=(240, 320), stride: int = 0, count: int = 10) -> list[View]:
    """ScanNet SensReader frames -> views at ``image_size`` (H, W) with depth in the colour frame."""
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
    if stride:
        chosen = valid[::stride]
    else:
        chosen = select_for_coverage([poses[i] for i in valid], count)
        chosen = [valid[j] for j in chosen]
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


@DATASETS.register("s3dis", description="S3DIS (Pointcept layout, Area_N/ROOM), test area 5; views/ if present")
def _s3dis(**kw) -> S3DIS:
    return S3DIS("s3dis", **kw)


@DATASETS.register("matterport3d", description="Matterport3D (Pointcept layout, 21 classes); views/ if present")
def _matterport(**kw) -> PointceptDataset:
    return PointceptDataset("matterport3d", **kw)
