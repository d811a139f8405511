"""Corruptions of test scenes at severities 1-5 (registered in ``CORRUPTIONS``).

Modelled on the point-cloud corruption suites (PointCloud-C, ModelNet40-C): jitter, global and local
dropout, density change, added background points, scale and rotation, plus colour shift and colour
drop for coloured indoor scans. They corrupt the 3D scan, not the paired camera images: rigid
transforms (rotation, scale) move the camera poses (and scale the depth maps) with the points so that
2D-3D lifting stays consistent; the others leave the views as they are. Added points are labelled
ignore. Each corruption is a pure function of (scene, severity, seed).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from bench.data.classes import IGNORE
from bench.data.scene import Scene, View
from bench.registry import Registry

CORRUPTIONS = Registry("corruption")


def _subset(scene: Scene, keep: np.ndarray) -> Scene:
    if not keep.any():  # never return an empty scene
        keep = keep.copy()
        keep[0] = True
    return replace(scene, coord=scene.coord[keep], color=scene.color[keep], label=scene.label[keep],
                   normal=None if scene.normal is None else scene.normal[keep])


def _sev(table, severity: int):
    return table[severity - 1]


@CORRUPTIONS.register("jitter", description="Gaussian noise on coordinates, std 1-5 cm")
def jitter(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    sigma = _sev((0.01, 0.02, 0.03, 0.04, 0.05), severity)
    return replace(scene, coord=(scene.coord + rng.normal(0, sigma, scene.coord.shape)).astype(np.float32))


@CORRUPTIONS.register("dropout_global", description="drop 20-80% of points uniformly")
def dropout_global(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    frac = _sev((0.2, 0.35, 0.5, 0.65, 0.8), severity)
    return _subset(scene, rng.random(scene.num_points) >= frac)


@CORRUPTIONS.register("dropout_local", description="remove 1-5 balls of 5% of the points each")
def dropout_local(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    keep = np.ones(scene.num_points, dtype=bool)
    per = max(1, int(0.05 * scene.num_points))
    for _ in range(_sev((1, 2, 3, 4, 5), severity)):
        c = scene.coord[rng.integers(scene.num_points)]
        d = np.linalg.norm(scene.coord - c, axis=1)
        d[~keep] = np.inf
        keep[np.argsort(d)[:per]] = False
    return _subset(scene, keep)


@CORRUPTIONS.register("density", description="non-uniform density: thin out along a random direction")
def density(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * math.pi)
    proj = scene.coord[:, :2] @ np.array([math.cos(a), math.sin(a)])
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    strength = _sev((0.3, 0.45, 0.6, 0.75, 0.9), severity)
    return _subset(scene, rng.random(scene.num_points) >= strength * t)


@CORRUPTIONS.register("noise_points", description="add 2-10% background points uniformly in the bounding box")
def noise_points(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    n = int(_sev((0.02, 0.04, 0.06, 0.08, 0.10), severity) * scene.num_points)
    lo, hi = scene.coord.min(0), scene.coord.max(0)
    pts = rng.uniform(lo, hi, (n, 3)).astype(np.float32)
    nrm = rng.normal(size=(n, 3)).astype(np.float32)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return replace(
        scene, coord=np.concatenate([scene.coord, pts]),
        color=np.concatenate([scene.color, rng.random((n, 3)).astype(np.float32)]),
        label=np.concatenate([scene.label, np.full(n, IGNORE, dtype=np.int64)]),
        normal=None if scene.normal is None else np.concatenate([scene.normal, nrm]),
    )


@CORRUPTIONS.register("color_shift", description="per-channel gain and offset of the point colours")
def color_shift(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    m = _sev((0.1, 0.2, 0.3, 0.4, 0.5), severity)
    gain = 1.0 + m * rng.choice([-1.0, 1.0], 3) * rng.uniform(0.7, 1.0, 3)
    offset = 0.5 * m * rng.choice([-1.0, 1.0], 3) * rng.uniform(0.7, 1.0, 3)
    return replace(scene, color=np.clip(scene.color * gain + offset, 0, 1).astype(np.float32))


@CORRUPTIONS.register("color_drop", description="replace the colour of 20-100% of the points by grey")
def color_drop(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    frac = _sev((0.2, 0.4, 0.6, 0.8, 1.0), severity)
    drop = rng.random(scene.num_points) < frac
    color = scene.color.copy()
    color[drop] = 0.5
    return replace(scene, color=color)


def _transform_views(views: list[View], m: np.ndarray) -> list[View]:
    return [replace(v, cam_to_world=(m @ v.cam_to_world).astype(np.float32)) for v in views]


@CORRUPTIONS.register("scale", description="isotropic scale by 1 +- 10-50% (poses and depth follow)")
def scale(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    s = 1.0 + rng.choice([-1.0, 1.0]) * _sev((0.1, 0.2, 0.3, 0.4, 0.5), severity)
    views = []
    for v in scene.views:  # a similarity transform: cameras keep their frame, positions and depths scale
        pose = v.cam_to_world.copy()
        pose[:3, 3] *= s
        views.append(replace(v, cam_to_world=pose, depth=(v.depth * s).astype(np.float32)))
    return replace(scene, coord=(scene.coord * s).astype(np.float32), views=views)


@CORRUPTIONS.register("rotation", description="rotation about z by 15-90 degrees (poses follow)")
def rotation(scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    a = math.radians(_sev((15, 30, 45, 60, 90), severity)) * rng.choice([-1.0, 1.0])
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=np.float32)
    m = np.eye(4, dtype=np.float32)
    m[:3, :3] = r
    return replace(scene, coord=(scene.coord @ r.T).astype(np.float32),
                   normal=None if scene.normal is None else (scene.normal @ r.T).astype(np.float32),
                   views=_transform_views(scene.views, m))
