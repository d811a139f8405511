"""Lifting 2D features onto 3D points through posed, depth-checked views.

A point is seen by a view when it projects in front of the camera, inside the image, and its depth
agrees with the view's depth map at that pixel to within ``tol`` metres (the occlusion test).
Features are sampled bilinearly from each view's feature map (any resolution: sampling a coarse map
bilinearly at the projected pixel equals upsampling it to image size first) and averaged over the
views that see the point. The projection itself (``project``, ``project_depth``) lives in
``bench.data.geometry``, below both the readers and this module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.geometry import project, project_depth  # noqa: F401  (re-exported: the one projection)
from bench.data.scene import View


def select_views(views: list[View], n: int | str) -> list[int]:
    """Indices of the views to use: the first ``n`` (or all)."""
    if n == "all" or n is None:
        return list(range(len(views)))
    return list(range(min(int(n), len(views))))


def lift(coord: np.ndarray, views: list[View], feature_maps: list[torch.Tensor], tol: float = 0.1):
    """Average of the bilinearly sampled features over the views that see each point.

    ``feature_maps[i]`` is (D, h, w) for ``views[i]``. Returns (features (N,D) float32, seen mask (N,)).
    """
    n = coord.shape[0]
    d = feature_maps[0].shape[0] if feature_maps else 0
    acc = torch.zeros(n, d)
    cnt = torch.zeros(n)
    for view, fmap in zip(views, feature_maps):
        u, v, seen = project(coord, view, tol)
        idx = np.nonzero(seen)[0]
        if len(idx) == 0:
            continue
        h, w = view.depth.shape
        gx = torch.from_numpy((u[idx] + 0.5) / w * 2 - 1).float()
        gy = torch.from_numpy((v[idx] + 0.5) / h * 2 - 1).float()
        grid = torch.stack([gx, gy], -1)[None, None]  # (1,1,M,2)
        sampled = F.grid_sample(fmap[None].float().cpu(), grid, mode="bilinear", align_corners=False)[0, :, 0].T
        ti = torch.from_numpy(idx)
        acc.index_add_(0, ti, sampled)
        cnt.index_add_(0, ti, torch.ones(len(idx)))
    mask = cnt > 0
    acc[mask] /= cnt[mask, None]
    return acc.numpy().astype(np.float32), mask.numpy()
