"""Corruptions of test scenes at severities 1-5 (registered in ``CORRUPTIONS``).

Modelled on the point-cloud corruption suites (PointCloud-C, ModelNet40-C): jitter, global and local
dropout, density change, added background points, scale and rotation, plus colour shift and colour
drop for coloured indoor scans. They corrupt the 3D scan, not the paired camera images: rigid
transforms (rotation, scale) move the camera poses (and scale the depth maps) with the points so that
2D-3D lifting stays consistent; the others leave the views as they are. Added points are labelled
ignore. Each corruption is a pure function of (scene, severity, seed).

Each entry is registered with ``config=`` (a dataclass holding its five per-severity values) and is
called as ``factory(cfg=cfg, scene=scene, severity=severity, seed=seed)``; ``corrupt`` does that with
the default config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace

import numpy as np

from bench.data.classes import IGNORE
from bench.data.scene import Scene, View
from bench.errors import BenchError
from bench.registry import Registry, make_config

CORRUPTIONS = Registry("corruption")


@dataclass(frozen=True)
class SeverityTable:
    """Base of the corruption configs: every field is a tuple of five values, one per severity 1-5."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, tuple) and len(v) == 5):
                raise BenchError(f"corruption {type(self).__name__}.{f.name} must have 5 values (severities "
                                 f"1-5), got {v!r}")


def corrupt(name: str, scene: Scene, severity: int, seed: int = 0, cfg: SeverityTable | None = None) -> Scene:
    """Apply corruption ``name`` at ``severity`` (1-5) to ``scene`` with its default (or the given) config."""
    entry = CORRUPTIONS.get(name)
    if not 1 <= severity <= 5:
        raise BenchError(f"corruption '{name}': severity must be 1-5, got {severity}")
    cfg = make_config(entry, {}, "corruption") if cfg is None else cfg
    return entry.factory(cfg=cfg, scene=scene, severity=severity, seed=seed)


def _subset(scene: Scene, keep: np.ndarray) -> Scene:
    if not keep.any():  # never return an empty scene
        keep = keep.copy()
        keep[0] = True
    return replace(scene, coord=scene.coord[keep], color=scene.color[keep], label=scene.label[keep],
                   normal=None if scene.normal is None else scene.normal[keep])


def _sev(table, severity: int):
    return table[severity - 1]


@dataclass(frozen=True)
class Jitter(SeverityTable):
    sigma: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05)  # std of the coordinate noise, metres


@CORRUPTIONS.register("jitter", description="Gaussian noise on coordinates, std 1-5 cm", config=Jitter)
def jitter(*, cfg: Jitter, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    sigma = _sev(cfg.sigma, severity)
    return replace(scene, coord=(scene.coord + rng.normal(0, sigma, scene.coord.shape)).astype(np.float32))


@dataclass(frozen=True)
class DropoutGlobal(SeverityTable):
    fraction: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8)  # share of points dropped


@CORRUPTIONS.register("dropout_global", description="drop 20-80% of points uniformly", config=DropoutGlobal)
def dropout_global(*, cfg: DropoutGlobal, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    frac = _sev(cfg.fraction, severity)
    return _subset(scene, rng.random(scene.num_points) >= frac)


@dataclass(frozen=True)
class DropoutLocal(SeverityTable):
    balls: tuple[int, ...] = (1, 2, 3, 4, 5)  # number of removed balls of 5% of the points


@CORRUPTIONS.register("dropout_local", description="remove 1-5 balls of 5% of the points each", config=DropoutLocal)
def dropout_local(*, cfg: DropoutLocal, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    keep = np.ones(scene.num_points, dtype=bool)
    per = max(1, int(0.05 * scene.num_points))
    for _ in range(_sev(cfg.balls, severity)):
        c = scene.coord[rng.integers(scene.num_points)]
        d = np.linalg.norm(scene.coord - c, axis=1)
        d[~keep] = np.inf
        keep[np.argsort(d)[:per]] = False
    return _subset(scene, keep)


@dataclass(frozen=True)
class Density(SeverityTable):
    strength: tuple[float, ...] = (0.3, 0.45, 0.6, 0.75, 0.9)  # drop probability at the far end of the gradient


@CORRUPTIONS.register("density", description="non-uniform density: thin out along a random direction", config=Density)
def density(*, cfg: Density, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * math.pi)
    proj = scene.coord[:, :2] @ np.array([math.cos(a), math.sin(a)])
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    strength = _sev(cfg.strength, severity)
    return _subset(scene, rng.random(scene.num_points) >= strength * t)


@dataclass(frozen=True)
class NoisePoints(SeverityTable):
    fraction: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.10)  # added points, share of the scene's


@CORRUPTIONS.register("noise_points", description="add 2-10% background points uniformly in the bounding box",
                      config=NoisePoints)
def noise_points(*, cfg: NoisePoints, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    n = int(_sev(cfg.fraction, severity) * scene.num_points)
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


@dataclass(frozen=True)
class ColorShift(SeverityTable):
    magnitude: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)  # gain deviation (offset: half of it)


@CORRUPTIONS.register("color_shift", description="per-channel gain and offset of the point colours", config=ColorShift)
def color_shift(*, cfg: ColorShift, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    m = _sev(cfg.magnitude, severity)
    gain = 1.0 + m * rng.choice([-1.0, 1.0], 3) * rng.uniform(0.7, 1.0, 3)
    offset = 0.5 * m * rng.choice([-1.0, 1.0], 3) * rng.uniform(0.7, 1.0, 3)
    return replace(scene, color=np.clip(scene.color * gain + offset, 0, 1).astype(np.float32))


@dataclass(frozen=True)
class ColorDrop(SeverityTable):
    fraction: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)  # share of points turned grey


@CORRUPTIONS.register("color_drop", description="replace the colour of 20-100% of the points by grey", config=ColorDrop)
def color_drop(*, cfg: ColorDrop, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    frac = _sev(cfg.fraction, severity)
    drop = rng.random(scene.num_points) < frac
    color = scene.color.copy()
    color[drop] = 0.5
    return replace(scene, color=color)


def _transform_views(views: list[View], m: np.ndarray) -> list[View]:
    return [replace(v, cam_to_world=(m @ v.cam_to_world).astype(np.float32)) for v in views]


@dataclass(frozen=True)
class Scale(SeverityTable):
    change: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)  # relative scale change (sign drawn at random)


@CORRUPTIONS.register("scale", description="isotropic scale by 1 +- 10-50% (poses and depth follow)", config=Scale)
def scale(*, cfg: Scale, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    s = 1.0 + rng.choice([-1.0, 1.0]) * _sev(cfg.change, severity)
    views = []
    for v in scene.views:  # a similarity transform: cameras keep their frame, positions and depths scale
        pose = v.cam_to_world.copy()
        pose[:3, 3] *= s
        views.append(replace(v, cam_to_world=pose, depth=(v.depth * s).astype(np.float32)))
    return replace(scene, coord=(scene.coord * s).astype(np.float32), views=views)


@dataclass(frozen=True)
class Rotation(SeverityTable):
    degrees: tuple[int, ...] = (15, 30, 45, 60, 90)  # rotation about z, degrees (sign at random)


@CORRUPTIONS.register("rotation", description="rotation about z by 15-90 degrees (poses follow)", config=Rotation)
def rotation(*, cfg: Rotation, scene: Scene, severity: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    a = math.radians(_sev(cfg.degrees, severity)) * rng.choice([-1.0, 1.0])
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=np.float32)
    m = np.eye(4, dtype=np.float32)
    m[:3, :3] = r
    return replace(scene, coord=(scene.coord @ r.T).astype(np.float32),
                   normal=None if scene.normal is None else (scene.normal @ r.T).astype(np.float32),
                   views=_transform_views(scene.views, m))
