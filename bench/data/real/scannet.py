"""ScanNet v2: Pointcept's layout (``segment20.npy``) plus SensReader frames as views.

Frames: ``FRAMES/SCENE/color/N.jpg``, ``depth/N.png`` (uint16 mm), ``pose/N.txt`` (camera-to-world,
some inf), ``intrinsic/intrinsic_color.txt`` and ``intrinsic_depth.txt``; ``N`` plain or zero-padded
(``0.jpg`` or ``00000.jpg``: a frame's files are matched by number, not by name). Colour (1296x968)
and depth (640x480) differ in resolution and intrinsics: the colour image is resized to
``image_size`` (its intrinsic scaled by ``resize_intrinsic``) and the depth map resampled into that
colour frame through both intrinsics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.datasets import DATASETS
from bench.data.geometry import pixel_rays, resize_intrinsic
from bench.data.real.base import PointceptDataset, RealConfig
from bench.data.scene import FrameSkips, View, read_image, read_matrix
from bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanNetConfig(RealConfig):
    frames: str | None = None  # SensReader exports, one folder per scene (default ROOT/frames)


class ScanNet(PointceptDataset):
    """ScanNet's test split has no public labels, so its val split serves as the test split."""

    label_file = "segment20.npy"

    def __init__(self, name: str, cfg: ScanNetConfig):
        super().__init__(name, cfg)
        self.frames = Path(cfg.frames).expanduser() if cfg.frames else self.root / "frames"

    def extra_fingerprint(self):
        return {"frames": self.frames}

    def _split_dirs(self, split: str) -> list[Path]:
        if split == "test" and not (self.root / "splits" / "test.txt").is_file():
            split = "val"
        return super()._split_dirs(split)

    def released_views(self, folder: Path, coord: np.ndarray, skips: FrameSkips) -> list[View]:
        fdir = self.frames / folder.name
        if not fdir.is_dir():
            return []
        return read_scannet_frames(fdir, self.image_size, self.select, skips)


def _numbered(folder: Path, suffix: str, skips: FrameSkips) -> tuple[dict[int, Path], set[int]]:
    """Frame number -> file for ``folder/N<suffix>`` with N plain or zero-padded, and the numbers that
    two files name (``7.txt`` and ``00007.txt``): those frames are ambiguous, skipped and counted."""
    found: dict[int, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.glob(f"*{suffix}")):
            stem = p.name[: -len(suffix)]
            if stem.isdigit():
                found.setdefault(int(stem), []).append(p)
    clash = {i for i, ps in found.items() if len(ps) > 1}
    for i in sorted(clash):
        skips.skip(found[i][0], "ambiguous frame number", f"{', '.join(p.name for p in found[i][1:])} name the "
                   "same frame; delete one")
    return {i: ps[0] for i, ps in found.items() if i not in clash}, clash


def read_scannet_frames(fdir: Path, image_size, select, skips: FrameSkips | None = None) -> list[View]:
    """ScanNet SensReader frames -> views at ``image_size`` (H, W) with depth in the colour frame;
    ``select`` picks frame indices from the valid frames' poses (``PointceptDataset.select``).

    A frame whose pose or depth is missing, unreadable or non-finite, or whose colour image or depth
    cannot be read, is skipped and counted in ``skips`` (logged with the files). Missing or malformed
    intrinsics, or no usable frame at all, raise a BenchError naming the file or folder."""
    skips = skips if skips is not None else FrameSkips(fdir)
    kc = read_matrix(fdir / "intrinsic" / "intrinsic_color.txt", (3, 3)).astype(np.float64)
    kd = read_matrix(fdir / "intrinsic" / "intrinsic_depth.txt", (3, 3)).astype(np.float64)
    colors, color_clash = _numbered(fdir / "color", ".jpg", skips)
    total = len(colors) + len(color_clash)
    if not total:
        raise BenchError(f"{fdir / 'color'}: no N.jpg frames; re-export the scene with SensReader")
    pose_files, pose_clash = _numbered(fdir / "pose", ".txt", skips)
    depths, depth_clash = _numbered(fdir / "depth", ".png", skips)
    poses: dict[int, np.ndarray] = {}
    for i, cpath in sorted(colors.items()):
        if i in pose_clash or i in depth_clash:
            continue  # counted as ambiguous
        pp, dp = pose_files.get(i), depths.get(i)
        if pp is None:
            skips.skip(fdir / "pose" / f"{cpath.stem}.txt", "pose missing")
            continue
        if dp is None:
            skips.skip(fdir / "depth" / f"{cpath.stem}.png", "depth missing")
            continue
        pose = skips.pose(pp)
        if pose is None:
            continue
        poses[i] = pose
    valid = sorted(poses)
    chosen = [valid[j] for j in select([poses[i] for i in valid])]
    h, w = image_size
    views = []
    for i in chosen:
        try:
            img = read_image(colors[i])
        except BenchError as e:
            skips.skip(colors[i], "unreadable colour image", e)
            continue
        try:
            with Image.open(depths[i]) as im:
                raw = np.asarray(im, dtype=np.float32) / 1000.0
        except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
            skips.skip(depths[i], "unreadable depth", e)
            continue
        if raw.ndim != 2:
            skips.skip(depths[i], "unreadable depth", f"expected a single-channel image, got shape {raw.shape}")
            continue
        k = resize_intrinsic(kc, img.shape[:2], (h, w))
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        # resample depth into the colour frame: colour pixel -> ray -> depth pixel (nearest)
        x, y = pixel_rays(k, (h, w))
        ud = np.round(kd[0, 0] * x + kd[0, 2]).astype(int)
        vd = np.round(kd[1, 1] * y + kd[1, 2]).astype(int)
        ok = (ud >= 0) & (ud < raw.shape[1]) & (vd >= 0) & (vd < raw.shape[0])
        depth = np.zeros((h, w), np.float32)
        depth[ok] = raw[vd[ok], ud[ok]]
        views.append(View(img, depth, k.astype(np.float32), poses[i]))
    skips.report(total, "frames")
    skips.check_any(len(views), total, "frames")
    return views


@DATASETS.register("scannet", description="ScanNet v2 (Pointcept layout, segment20), SensReader frames as views",
                   config=ScanNetConfig)
def _scannet(*, cfg: ScanNetConfig) -> ScanNet:
    return ScanNet("scannet", cfg)
