"""Pinhole camera geometry shared by the synthetic world, the real-dataset readers and lifting.

Conventions (one for the whole harness): OpenCV camera axes (x right, y down, z forward), a 3x3
intrinsic ``K`` whose pixel centres lie at integer coordinates (pixel ``(u, v)`` covers
``[u - 0.5, u + 0.5]``), and 4x4 camera-to-world poses. A world point ``p`` lands at
``K @ R^T (p - t)`` divided by its depth.

Nothing here imports from ``teachers/`` or from the readers: they import it.
"""

from __future__ import annotations

import math

import numpy as np

from bench.data.scene import View


def project_depth(coord: np.ndarray, view: View):
    """Pixel coordinates (u, v), camera depth z of the points, the view's depth d at their pixel (0
    where none) and a mask of the points that fall inside the image in front of the camera."""
    pose = view.cam_to_world.astype(np.float64)
    pc = (coord.astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]  # world -> camera (R^T (p - t))
    z = pc[:, 2]
    k = view.intrinsic
    zs = np.where(z > 1e-6, z, 1.0)
    u = k[0, 0] * pc[:, 0] / zs + k[0, 2]
    v = k[1, 1] * pc[:, 1] / zs + k[1, 2]
    h, w = view.depth.shape
    ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
    inside = (z > 1e-6) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    d = np.zeros_like(z)
    d[inside] = view.depth[vi[inside], ui[inside]]
    return u, v, z, d, inside


def project(coord: np.ndarray, view: View, tol: float = 0.1):
    """Pixel coordinates (u, v) of the points in ``view`` and a mask of the points it sees: inside the
    image, in front of the camera and within ``tol`` metres of the view's depth at that pixel."""
    u, v, z, d, inside = project_depth(coord, view)
    return u, v, inside & (d > 0) & (np.abs(z - d) < tol)


def resize_intrinsic(k: np.ndarray, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    """The intrinsic of an image resized from ``old_hw`` to ``new_hw`` = (H, W) (float64).

    Pixel centres sit at integer coordinates, so a resize maps ``u + 0.5`` to ``(u + 0.5) * w / w0``:
    the focal lengths scale with the pixel grid and the principal point also moves by the half-pixel
    term ``0.5 * w / w0 - 0.5`` (without it, points land ~0.4 px off when 1296x968 shrinks to 320x240).
    """
    (h0, w0), (h, w) = old_hw, new_hw
    k = np.asarray(k, dtype=np.float64).copy()
    sx, sy = w / w0, h / h0
    k[0, :] *= sx
    k[1, :] *= sy
    k[0, 2] += 0.5 * sx - 0.5
    k[1, 2] += 0.5 * sy - 0.5
    return k


def pixel_rays(k: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates (x, y) = ((u - cx) / fx, (v - cy) / fy) of every pixel, each (H, W):
    the ray through pixel (u, v) is (x, y, 1) in the camera frame."""
    h, w = hw
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenCV convention: x right, y down, z forward)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(x) < 1e-6:
        x = np.array([1.0, 0.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m.astype(np.float32)


def intrinsic_for(hw: tuple[int, int], fov_deg: float) -> np.ndarray:
    """A centred pinhole intrinsic for an image of ``hw`` = (H, W) with horizontal field of view ``fov_deg``."""
    h, w = hw
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float32)
