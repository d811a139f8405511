"""Checks that a real scene's views fit its points, run by every reader on every scene with views.

* ``depth_agreement`` catches poses in another frame than the points: of the points that project onto
  a depth reading and are not hidden behind it, the share lying on the depth surface.
* ``color_consistency`` catches what the depth check cannot see: a wrong colour intrinsic, or colour
  images paired with the wrong poses/depth maps. Both leave the depth check at 100% (the depth map is
  resampled into the colour frame through the same intrinsic, and the depth belongs to the pose),
  while the lifted 2D features are garbage. It is the correlation between the points' colours and
  the image colours at their projections.

Thresholds (below them the reader logs a warning naming the scene). The colour threshold was chosen
from values measured on 12 synthetic scenes (4 per domain, their 10 views each) as they are and
broken (README "Real data and real teachers"): correct views score 0.81-0.96; each image paired with
another view's pose and depth -0.01-0.13; the intrinsic of an image of half the size 0.03-0.20;
focal length 20% off 0.12-0.31; principal point 10% of the width off 0.13-0.39; focal length 10% off
0.25-0.45 (not reliably caught); the depth agreement stays the same in every broken case. 0.4 lies
well below every correct scene, leaving room for real scans (blur, exposure, mesh colours), whose
values are lower than the synthetic world's.
"""

from __future__ import annotations

import logging

import numpy as np

from bench.data.geometry import project, project_depth
from bench.data.scene import View

log = logging.getLogger(__name__)

DEPTH_AGREEMENT_MIN = 0.7
COLOR_CONSISTENCY_MIN = 0.4


def _sample(n: int, max_points: int) -> np.ndarray:
    return np.linspace(0, n - 1, min(n, max_points)).astype(np.int64)


def depth_agreement(coord: np.ndarray, views: list[View], tol: float = 0.1, max_points: int = 20000) -> float:
    """How well poses and points share a frame: of the points that project onto a valid depth reading
    and are not hidden behind it, the fraction lying on the depth surface (within ``tol`` m), over all
    views. A point in front of the surface would be in free space the camera saw through: near 1 for
    matching poses, low for poses in another frame. Occluded points (behind the surface) do not count."""
    idx = _sample(len(coord), max_points)
    on = front = 0
    for v in views:
        _, _, z, d, inside = project_depth(coord[idx], v)
        valid = inside & (d > 0)
        on += int((valid & (np.abs(z - d) < tol)).sum())
        front += int((valid & (z <= d - tol)).sum())
    return on / (on + front) if on + front else 0.0


def _centred(x: np.ndarray, cell: np.ndarray, n_cells: int) -> np.ndarray:
    """``x`` (M,3) minus the mean of its cell, per channel."""
    count = np.maximum(np.bincount(cell, minlength=n_cells), 1)[:, None]
    sums = np.stack([np.bincount(cell, x[:, c], n_cells) for c in range(x.shape[1])], 1)
    return x - (sums / count)[cell]


def color_consistency(coord: np.ndarray, color: np.ndarray, views: list[View], tol: float = 0.1,
                      max_points: int = 20000, min_points: int = 50, cells: int = 4) -> float:
    """Correlation between point colours and the image colours lifted onto them.

    Per view: the points it sees (depth-checked, as lifting does) take the colour of the pixel they
    project to. Both colour sets are centred per channel within each cell of a ``cells`` x ``cells``
    grid over the image, then correlated (Pearson, three channels pooled). Centring per cell removes
    what any view of a room shares (floor at the bottom, walls above), so that an image of another
    view scores near 0 instead of ~0.2, and it ignores a per-view exposure or white-balance gain. The
    scene's value is the mean over views weighted by points seen; views that see fewer than
    ``min_points`` points are left out; 0.0 when no view sees enough points (the depth check warns).
    """
    idx = _sample(len(coord), max_points)
    pts, cols = coord[idx], color[idx].astype(np.float64)
    total = weight = 0.0
    for v in views:
        u, vv, seen = project(pts, v, tol)
        m = int(seen.sum())
        if m < min_points:
            continue
        ui, vi = np.round(u[seen]).astype(np.int64), np.round(vv[seen]).astype(np.int64)
        h, w = v.depth.shape
        cell = (vi * cells // h) * cells + ui * cells // w
        a, b = _centred(v.image[vi, ui] / 255.0, cell, cells * cells), _centred(cols[seen], cell, cells * cells)
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        total += m * (float((a * b).sum()) / den if den > 0 else 0.0)
        weight += m
    return total / weight if weight else 0.0


def diagnose(where: str, coord: np.ndarray, color: np.ndarray, views: list[View], tol: float = 0.1) -> dict[str, float]:
    """Both checks of one scene's views: logged, warned below their thresholds, returned for
    ``Scene.diagnostics``."""
    agree = depth_agreement(coord, views, tol)
    consistent = color_consistency(coord, color, views, tol)
    log.info("%s: %d views; %.0f%% of the unoccluded points they see lie on their depth surface; colour "
             "consistency %.2f", where, len(views), 100 * agree, consistent)
    if agree < DEPTH_AGREEMENT_MIN:
        log.warning("%s: only %.0f%% of unoccluded points lie on the depth surface (expected >= %.0f%%): the "
                    "poses and the point cloud are probably in different frames", where, 100 * agree,
                    100 * DEPTH_AGREEMENT_MIN)
    if consistent < COLOR_CONSISTENCY_MIN:
        log.warning("%s: colour consistency %.2f < %.2f: the image colours at the points' projections do not "
                    "match the point colours, so lifted 2D features land on the wrong points. Check the colour "
                    "intrinsic and that each colour image belongs to its pose and depth map", where,
                    consistent, COLOR_CONSISTENCY_MIN)
    return {"depth_agreement": float(agree), "color_consistency": float(consistent)}
