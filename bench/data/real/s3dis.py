"""S3DIS: Pointcept's layout (``Area_N/ROOM``) plus the Stanford 2D-3D-Semantics images as views.

Images: ``IMAGES/area_N/data/{rgb,depth,pose}/camera_<uuid>_<room>_frame_<k>_domain_{rgb.png,
depth.png,pose.json}`` (Area 5 may be split into ``area_5a``/``area_5b``). Pose JSON:
``camera_rt_matrix`` = 3x4 world-to-camera [R|t] (OpenCV axes), ``camera_k_matrix`` = 3x3; depth =
uint16 / 512 m, 65535 = no reading. The poses are in the raw area frame; Pointcept's S3DIS may be
rotated per room (``--align_angle``: a multiple of 90 degrees about the room's centre), hence
``align``: ``"auto"`` tries the four rotations and keeps the one that agrees best with the depth maps.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from bench.data.datasets import DATASETS
from bench.data.real.base import PointceptDataset, RealConfig, fit_view
from bench.data.real.diagnostics import depth_agreement
from bench.data.scene import NON_FINITE_POSE, FrameSkips, View, read_depth, read_image
from bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3DISConfig(RealConfig):
    images: str | None = None  # the 2D-3D-S release (default ROOT/2d3ds or $TTT_BENCH_DATA_S3DIS_IMAGES)
    align: str | float = "auto"  # "auto", "none" or an angle in degrees about the room centre
    test_area: int = 5  # the area of the val/test split; the others are train

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.align in ("auto", "none") or (isinstance(self.align, int | float)
                                                   and not isinstance(self.align, bool))):
            raise BenchError(f"s3dis: align must be 'auto', 'none' or an angle in degrees, got {self.align!r}")
        if not (isinstance(self.test_area, int) and 1 <= self.test_area <= 6):
            raise BenchError(f"s3dis: test_area must be an area number 1-6, got {self.test_area!r}")


class S3DIS(PointceptDataset):
    """S3DIS rooms; views from the 2D-3D-S release (see the module docstring)."""

    def __init__(self, name: str, cfg: S3DISConfig):
        super().__init__(name, cfg)
        self.images = self._images_root(cfg.images, "2d3ds")
        self.align, self.test_area = cfg.align, cfg.test_area

    def extra_fingerprint(self):
        return {"images": self.images, "align": self.align, "test_area": self.test_area}

    def released_views(self, folder: Path, coord: np.ndarray, skips: FrameSkips) -> list[View]:
        if self.images is None:
            return []
        area, room = folder.parent.name, folder.name
        m = re.fullmatch(r"Area_(\d+)", area)
        if not m:
            return []
        frames = [f for a in _2d3ds_areas(self.images, int(m.group(1))) for f in _2d3ds_index(a).get(room, [])]
        views = read_2d3ds_frames(frames, self.image_size, self.select, skips)
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


def read_2d3ds_frames(frames: list[tuple[int, str, Path]], image_size, select,
                      skips: FrameSkips | None = None) -> list[View]:
    """2D-3D-S frames -> views: pose JSON (world-to-camera [R|t], K), rgb PNG, depth PNG (1/512 m).
    A frame whose pose is unreadable or non-finite, or whose image or depth is missing or unreadable,
    is skipped and counted in ``skips`` (logged with the files); no usable frame at all raises."""
    skips = skips if skips is not None else FrameSkips("2D-3D-S frames")
    good = []
    for _, _, pose_path in frames:
        stem = pose_path.name[: -len("pose.json")]
        rgb = pose_path.parent.parent / "rgb" / f"{stem}rgb.png"
        dep = pose_path.parent.parent / "depth" / f"{stem}depth.png"
        try:
            meta = json.loads(pose_path.read_text())
            rt = np.asarray(meta["camera_rt_matrix"], dtype=np.float64)
            k = np.asarray(meta["camera_k_matrix"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as e:
            skips.skip(pose_path, "unreadable pose", f"{type(e).__name__}: {e}")
            continue
        if rt.shape != (3, 4) or k.shape != (3, 3):
            skips.skip(pose_path, "unreadable pose", f"camera_rt_matrix {rt.shape}, camera_k_matrix {k.shape}; "
                       "expected 3x4 and 3x3")
            continue
        if not (np.isfinite(rt).all() and np.isfinite(k).all()):
            skips.skip(pose_path, NON_FINITE_POSE)
            continue
        if not rgb.is_file():
            skips.skip(rgb, "image missing")
            continue
        if not dep.is_file():
            skips.skip(dep, "depth missing")
            continue
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rt[:, :3].T, -rt[:, :3].T @ rt[:, 3]
        good.append((c2w, k, rgb, dep))
    views = []
    for i in select([g[0] for g in good]):
        c2w, k, rgb, dep = good[i]
        try:
            image = read_image(rgb)
            raw = read_depth(dep, scale=1.0)
            depth = np.where(raw == 65535, 0.0, raw / 512.0).astype(np.float32)
            views.append(fit_view(image, depth, k, c2w, image_size))
        except BenchError as e:
            skips.skip(rgb, "unreadable image or depth", e)
    skips.report(len(frames), "2D-3D-S frames")
    skips.check_any(len(views), len(frames), "2D-3D-S frames")
    return views


@DATASETS.register("s3dis", description="S3DIS (Pointcept layout, Area_N/ROOM), test area 5, 2D-3D-S images",
                   config=S3DISConfig)
def _s3dis(*, cfg: S3DISConfig) -> S3DIS:
    return S3DIS("s3dis", cfg)
