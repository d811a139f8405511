"""Ray casting boxes, shading and pinhole rendering of the synthetic world (torch, CPU)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.classes import IGNORE


def raycast(origins: torch.Tensor, dirs: torch.Tensor, boxes, chunk: int = 8192):
    """Nearest hit of each ray with the oriented boxes (slab test): (t, box index, world normal); t=inf
    for a miss.

    ``origins`` is (R,3), or (3,) when every ray starts at one point (a camera): the slab bounds are
    then computed once per box instead of once per ray and box. The three axes are kept as separate
    (rays, boxes) tensors and reduced elementwise (no stacking, no reductions over a size-3 axis);
    every element goes through the same arithmetic as the stacked form, so results are bit-identical
    (ties between axes go to the first, as ``max(-1)`` does)."""
    center, half, yaw = boxes[0], boxes[1], boxes[2]
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    if origins.dim() == 1:  # one origin: its slab bounds in each box's frame, three (B,) pairs
        bounds = _slab_bounds(origins[None] - center, cy, sy, half)
    ts, idxs, normals = [], [], []
    for i in range(0, dirs.shape[0], chunk):
        if origins.dim() != 1:
            bounds = _slab_bounds(origins[i:i + chunk, None, :] - center[None], cy, sy, half[None])  # (R,B) each
        dx, dy, dz = (dirs[i:i + chunk, j, None] for j in range(3))  # (R,1)
        # the direction in each box's frame (rotated by -yaw about z); z is the same for every box
        dl = (cy * dx + sy * dy, -sy * dx + cy * dy, dz)
        tnear = tfar = axis = None
        for j, (d, (lo, hi)) in enumerate(zip(dl, bounds)):
            inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
            t1, t2 = lo * inv, hi * inv
            tlo, thi = torch.minimum(t1, t2), torch.maximum(t1, t2)
            if j == 0:
                tnear, tfar, axis = tlo, thi, torch.zeros(tlo.shape, dtype=torch.long)
            else:
                axis = torch.where(tlo > tnear, j, axis)
                tnear, tfar = torch.maximum(tnear, tlo), torch.minimum(tfar, thi)
        hit = (tfar >= tnear) & (tnear > 1e-4)
        tnear = torch.where(hit, tnear, torch.full_like(tnear, float("inf")))
        t, b = tnear.min(-1)
        rows = torch.arange(len(b))
        ax = axis[rows, b]
        dhit = torch.stack([x.expand(-1, len(cy))[rows, b] for x in dl], -1)  # (R,3): the hit box's frame
        sgn = -torch.sign(dhit[rows, ax])
        nl = torch.zeros(len(b), 3)
        nl[rows, ax] = sgn
        c, s = cy[b], sy[b]
        n = torch.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)
        ts.append(t), idxs.append(b), normals.append(n)
    return torch.cat(ts), torch.cat(idxs), torch.cat(normals)


def _slab_bounds(o: torch.Tensor, cy: torch.Tensor, sy: torch.Tensor, half: torch.Tensor):
    """Per axis of the box frame, the slab bounds ``(-half - o_local, half - o_local)`` of ray origins
    ``o`` (relative to the box centres) rotated into each box's frame (by -yaw about z)."""
    ol = (cy * o[..., 0] + sy * o[..., 1], -sy * o[..., 0] + cy * o[..., 1], o[..., 2])
    return [(-half[..., j] - ol[j], half[..., j] - ol[j]) for j in range(3)]


def kelvin_rgb(k: float) -> np.ndarray:
    """Approximate white-balance gains of a light of colour temperature ``k`` (normalised to green)."""
    t = k / 100.0
    r = 255.0 if t <= 66 else 329.7 * (t - 60) ** -0.1332
    g = 99.47 * math.log(t) - 161.1 if t <= 66 else 288.1 * (t - 60) ** -0.0755
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5 * math.log(t - 10) - 305.0)
    rgb = np.clip(np.array([r, g, b]), 1, 255) / 255.0
    return (rgb / rgb[1]).astype(np.float32)


@dataclass
class Lighting:
    ambient: float
    lamp_pos: np.ndarray
    lamp: float
    falloff: float
    tint: np.ndarray
    texture: float


def shade(points, normals, box_idx, boxes, light: Lighting) -> torch.Tensor:
    """Colour of surface points: textured albedo x (ambient + lamp diffuse with fall-off) x tint; a box with
    emission > 0 (window glass) takes that brightness instead of the room's lighting."""
    albedo, texfreq = boxes[4][box_idx], boxes[5][box_idx]
    lamp = torch.tensor(light.lamp_pos, dtype=torch.float32)
    to_l = lamp[None] - points
    dist = to_l.norm(dim=1, keepdim=True).clamp_min(1e-3)
    diffuse = (normals * to_l / dist).sum(1, keepdim=True).clamp_min(0.0)
    inten = light.ambient + light.lamp * diffuse / (1.0 + light.falloff * dist ** 2)
    if len(boxes) > 6:  # glass: lit from outside by daylight, whatever the lamp does
        emit = boxes[6][box_idx][:, None]
        inten = torch.where(emit > 0, emit, inten)
    f = texfreq[:, None]
    tex = 1.0 + light.texture * (torch.sin(f * points[:, :1] * 6.0) * torch.sin(f * points[:, 1:2] * 5.0 + 1.0)
                                 + 0.5 * torch.sin(f * points[:, 2:3] * 7.0))
    col = albedo * inten * tex * torch.tensor(light.tint)[None]
    return col.clamp(0.0, 1.0)


def camera_rays(k: np.ndarray, pose: np.ndarray, hw: tuple[int, int]):
    h, w = hw
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pix = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, dtype=np.float64)], -1)
    pix = pix.reshape(-1, 3)
    dirs_cam = pix / np.linalg.norm(pix, axis=1, keepdims=True)
    dirs = dirs_cam @ pose[:3, :3].T
    z_per_t = dirs_cam[:, 2]  # depth = t * z_per_t
    origins = np.broadcast_to(pose[:3, 3], dirs.shape)
    return (torch.tensor(np.ascontiguousarray(origins), dtype=torch.float32),
            torch.tensor(dirs, dtype=torch.float32), torch.tensor(z_per_t, dtype=torch.float32))


def visible_boxes(boxes, k: np.ndarray, pose: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """Indices (in order) of the boxes that some pixel ray of this camera could hit.

    Every pixel ray lies inside the cone spanned by the rays through the four corner pixels, so a box
    wholly behind the camera, or wholly outside one of the cone's four side planes, is never hit:
    dropping it changes no hit (and keeping the order keeps ties the same), and ray casting does less
    work.
    """
    center, half, yaw = boxes[0], boxes[1], boxes[2]
    signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float32)
    local = signs[None] * half[:, None]  # (B,8,3)
    c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    corners = torch.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1],
                           local[..., 2]], -1) + center[:, None]
    rel = (corners.double() - torch.tensor(pose[:3, 3], dtype=torch.float64)) @ torch.tensor(pose[:3, :3],
                                                                                            dtype=torch.float64)
    h, w = hw
    ray = lambda u, v: np.array([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], 1.0])  # noqa: E731
    cone = [ray(0, 0), ray(w - 1, 0), ray(w - 1, h - 1), ray(0, h - 1)]
    keep = (rel[..., 2] > -1e-3).any(1)
    for a, b in zip(cone, cone[1:] + cone[:1]):
        n = torch.tensor(np.cross(a, b), dtype=torch.float64)
        n = n / n.norm()
        inside = -torch.sign(n @ torch.tensor(cone[0] + cone[2], dtype=torch.float64))  # orient outward
        keep &= ((rel @ n) * inside < 1e-3).any(1)
    return torch.nonzero(keep).squeeze(1)


def render(boxes, light: Lighting, k, pose, hw):
    """Render one pinhole view: (rgb float (H,W,3), depth (H,W), label (H,W), hit points, normals, box idx)."""
    o, d, zpt = camera_rays(k, pose, hw)
    keep = visible_boxes(boxes, k, pose, hw)
    t, b, n = raycast(o[0], d, [x[keep] for x in boxes[:3]])
    b = keep[b]
    hit = torch.isfinite(t)
    tt = torch.where(hit, t, torch.zeros_like(t))
    pts = o + d * tt[:, None]
    col = shade(pts, n, b, boxes, light)
    col[~hit] = 0.0
    depth = torch.where(hit, tt * zpt, torch.zeros_like(t))
    label = torch.where(hit, boxes[3][b], torch.full_like(b, IGNORE))
    return col, depth, label, pts, n, b, hit
