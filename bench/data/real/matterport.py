"""Matterport3D: Pointcept's layout (21 classes, ``HOUSE_regionK`` scenes) plus the undistorted images.

Images: ``IMAGES/HOUSE/undistorted_camera_parameters/HOUSE.conf`` (also ``HOUSE/HOUSE/...`` as
unzipped), ``undistorted_color_images/*.jpg``, ``undistorted_depth_images/*.png`` (uint16, 0.25 mm,
0 = no reading). The .conf file gives ``intrinsics_matrix`` lines and ``scan DEPTH COLOR <16 numbers>``
lines, a camera-to-world matrix of a camera looking along -z with +y up and pixel coordinates from the
bottom-left corner; the reader converts both to the harness's convention (OpenCV axes, top-left
origin). Images whose camera centre lies in the scene's bounding box (grown by ``region_margin``
metres) belong to the scene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.datasets import DATASETS
from bench.data.real.base import PointceptDataset, RealConfig, fit_view
from bench.data.scene import NON_FINITE_POSE, FrameSkips, View, read_depth, read_image
from bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatterportConfig(RealConfig):
    images: str | None = None  # undistorted release (default ROOT/matterport, $TTT_BENCH_DATA_MATTERPORT3D_IMAGES)
    region_margin: float = 0.5  # metres around the region's points within which a camera belongs to it


class Matterport3D(PointceptDataset):
    """Matterport3D regions; views from the undistorted release (see the module docstring)."""

    def __init__(self, name: str, cfg: MatterportConfig):
        super().__init__(name, cfg)
        self.images = self._images_root(cfg.images, "matterport")
        self.region_margin = cfg.region_margin

    def extra_fingerprint(self):
        return {"images": self.images, "region_margin": self.region_margin}

    def released_views(self, folder: Path, coord: np.ndarray, skips: FrameSkips) -> list[View]:
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
        scans = parse_matterport_conf(conf, skips)
        lo, hi = coord.min(0) - self.region_margin, coord.max(0) + self.region_margin
        scans = [s for s in scans if np.all((s[3][:3, 3] >= lo) & (s[3][:3, 3] <= hi))]
        total = len(scans) + skips.count
        views = []
        for i in self.select([s[3] for s in scans]):
            try:
                views.append(read_matterport_scan(conf.parent.parent, *scans[i], image_size=self.image_size))
            except BenchError as e:
                skips.skip(conf.parent.parent / "undistorted_color_images" / scans[i][1], "unreadable scan", e)
        skips.report(total, "scans")
        skips.check_any(len(views), total, "scans")
        return views


def parse_matterport_conf(path: Path, skips: FrameSkips | None = None) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(depth file, colour file, K, camera-to-world) of every usable ``scan`` line, as written
    (OpenGL-style camera, bottom-left pixel origin). A malformed ``scan`` line, one with a non-finite
    pose, or one under a malformed ``intrinsics_matrix`` line is skipped and counted in ``skips``,
    naming ``FILE:LINE``; an unreadable file raises a BenchError."""
    skips = skips if skips is not None else FrameSkips(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: cannot read the camera parameters ({e}); re-extract the house's "
                         "undistorted_camera_parameters") from e
    scans, k, k_error = [], None, "no intrinsics_matrix line before it"
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "intrinsics_matrix":
            try:
                k = np.array(parts[1:10], dtype=np.float64).reshape(3, 3)
                if not np.isfinite(k).all():
                    raise ValueError("non-finite values")
            except ValueError as e:
                k, k_error = None, f"the intrinsics_matrix of line {n} is malformed ({e})"
        elif parts[0] == "scan":
            where = f"{path}:{n}"
            if k is None:
                skips.skip(where, "scan without intrinsics", k_error)
                continue
            try:
                if len(parts) != 19:
                    raise ValueError(f"expected 'scan DEPTH COLOR' and 16 numbers, got {len(parts) - 1} fields")
                pose = np.array(parts[3:19], dtype=np.float64).reshape(4, 4)
            except ValueError as e:
                skips.skip(where, "malformed scan line", e)
                continue
            if not np.isfinite(pose).all():
                skips.skip(where, NON_FINITE_POSE)
                continue
            scans.append((parts[1], parts[2], k, pose))
    return scans


def read_matterport_scan(house_dir: Path, depth_name: str, color_name: str, k: np.ndarray, c2w_gl: np.ndarray,
                         image_size=(240, 320)) -> View:
    """One undistorted Matterport image as a view in OpenCV convention (x right, y down, z forward,
    top-left pixel origin): flip the camera's y and z axes and mirror cy about the image height.
    A missing or unreadable image raises a BenchError naming the file (readers skip and count it)."""
    image = read_image(house_dir / "undistorted_color_images" / color_name)
    dpath = house_dir / "undistorted_depth_images" / depth_name
    if not dpath.is_file():
        raise BenchError(f"{dpath}: depth image missing for {color_name}")
    depth = read_depth(dpath, scale=4000.0)
    kc = k.copy()
    kc[1, 2] = image.shape[0] - 1 - k[1, 2]
    return fit_view(image, depth, kc, c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0]), image_size)


@DATASETS.register("matterport3d", description="Matterport3D (Pointcept layout, 21 classes), undistorted images",
                   config=MatterportConfig)
def _matterport(*, cfg: MatterportConfig) -> Matterport3D:
    return Matterport3D("matterport3d", cfg)
