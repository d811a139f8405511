"""What every real-dataset reader shares: its config, the Pointcept per-scene layout, frame selection,
resizing views, and the per-scene diagnostics (``Scene.diagnostics``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.classes import MAPPINGS, NUM_CLASSES, lookup_table, mapped_classes
from bench.data.datasets import Dataset
from bench.data.geometry import resize_intrinsic
from bench.data.real.diagnostics import diagnose
from bench.data.scene import FrameSkips, Scene, View, read_points, read_views
from bench.errors import BenchError

log = logging.getLogger(__name__)

# bump when a reader changes the views it yields: part of the fingerprint, so teacher features and
# models cached from older views are not reused (2: half-pixel intrinsic scaling, zero-padded frames)
READER_VERSION = 2


@dataclass(frozen=True)
class RealConfig:
    """Options every real dataset takes (grid ``[data_options.NAME]``)."""

    root: str | None = None  # data root; else $TTT_BENCH_DATA_<NAME>
    frame_stride: int = 0  # use every n-th valid frame (0: frame_count frames chosen for coverage)
    frame_count: int = 10  # frames per scene, chosen for camera position/direction coverage
    image_size: tuple[int, int] = (240, 320)  # (H, W) the views are resized to fit

    def __post_init__(self) -> None:
        if not (isinstance(self.frame_stride, int) and self.frame_stride >= 0):
            raise BenchError(f"frame_stride must be an integer >= 0, got {self.frame_stride!r}")
        if not (isinstance(self.frame_count, int) and self.frame_count >= 1):
            raise BenchError(f"frame_count must be an integer >= 1, got {self.frame_count!r}")
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(x, int) and x > 0 for x in size):
            raise BenchError(f"image_size must be [H, W] of positive integers, got {self.image_size!r}")


class PointceptDataset(Dataset):
    """A real dataset in Pointcept's per-scene layout; subclasses read their released views."""

    label_file = "segment.npy"

    def __init__(self, name: str, cfg: RealConfig):
        env = f"TTT_BENCH_DATA_{name.upper()}"
        root = cfg.root or os.environ.get(env)
        if not root:
            raise BenchError(f"dataset '{name}' needs its data root: pass --data-root {name}=PATH, set "
                             f"[data_options.{name}] root = PATH in the grid, or set ${env}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BenchError(f"dataset '{name}': data root {self.root} is not a folder")
        self.name, self.cfg = name, cfg
        self.table = lookup_table(MAPPINGS[name])
        self.classes = mapped_classes(MAPPINGS[name])
        self.frame_stride, self.frame_count = cfg.frame_stride, cfg.frame_count
        self.image_size = tuple(cfg.image_size)

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
        diagnostics = {"labelled": float((label >= 0).mean())}
        views: list[View] = []
        if with_views:
            where = f"{self.name}/{name}"
            skips = FrameSkips(where)
            views = self.views(folder, coord, skips)
            diagnostics.update(views=float(len(views)), frames_skipped=float(skips.count))
            if views:
                diagnostics.update(diagnose(where, coord, color, views))
        scene = Scene(folder.name, self.name, coord, color, label, normal, views, diagnostics)
        return scene.validate(str(folder), NUM_CLASSES)

    def check(self, names: list[str], normals: bool = False) -> list[str]:
        """Read the point files of each named scene as ``load`` does (shapes, dtypes, NaN, label range,
        truncated or missing files); one problem line per bad scene."""
        problems = []
        for name in names:
            folder = self.root / name
            try:
                _, _, normal, _ = read_points(folder, self.label_file, self.table)
            except BenchError as e:
                problems.append(str(e))
                continue
            if normals and normal is None:
                problems.append(f"{folder / 'normal.npy'}: file missing, and the cells' input features include "
                                "'normal'; export the scene with normals, or set features = [\"color\"] in the grid")
        return problems

    def views(self, folder: Path, coord: np.ndarray, skips: FrameSkips) -> list[View]:
        """The scene's views: its ``views/`` folder if it has one, else the dataset's released images."""
        if (folder / "views").is_dir():
            return read_views(folder / "views", skips)
        return self.released_views(folder, coord, skips)

    def released_views(self, folder: Path, coord: np.ndarray, skips: FrameSkips) -> list[View]:
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
        return {"dataset": self.name, "reader": READER_VERSION, "root": str(self.root),
                "frame_stride": self.frame_stride, "frame_count": self.frame_count,
                "image_size": list(self.image_size),
                **{k: str(v) for k, v in self.extra_fingerprint().items()}}

    def extra_fingerprint(self) -> dict:
        return {}


def fit_view(image: np.ndarray, depth: np.ndarray, k: np.ndarray, pose: np.ndarray, size) -> View:
    """A view resized to fit inside ``size`` = (H, W) with its aspect ratio kept: colour bilinear,
    depth nearest (no mixing across edges), intrinsics scaled with the pixel grid (``resize_intrinsic``)."""
    h0, w0 = image.shape[:2]
    if depth.shape != (h0, w0):
        raise BenchError(f"depth {depth.shape} and colour {(h0, w0)} differ in size")
    s = min(size[0] / h0, size[1] / w0)
    h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
    k = resize_intrinsic(k, (h0, w0), (h, w))
    if (h, w) != (h0, w0):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        depth = np.asarray(Image.fromarray(depth.astype(np.float32)).resize((w, h), Image.NEAREST))
    return View(image, depth.astype(np.float32), k.astype(np.float32), pose.astype(np.float32))


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
