"""A procedural world of indoor rooms with paired RGB-D views and domains that really differ.

Every object is a set of boxes (rotated about z). A scene is scanned the way real indoor datasets
are made: a sensor at a few positions sweeps the room, every scan pixel is ray-cast against the same
boxes, given metric depth with the domain's sensor noise, back-projected through a slightly wrong pose
(registration noise) and fused on a voxel grid into the point cloud. Occluded surfaces therefore
leave holes, glass has no depth on consumer sensors, and the colours of points and of the paired
views come from one shading model. The paired views (K posed pinhole cameras) are rendered from the
same geometry with the same shading, so a point projected into a view lands on a pixel of matching
depth and label.

Domains (see ``DOMAINS``) mirror the character of the three indoor datasets of the TTT-KD paper:

* ``synth-scannet`` - ScanNet: small homes and offices (bedrooms, living rooms), no ceiling (ScanNet
  reconstructions mostly lack it and ScanNet-20 has no ceiling class), warm tungsten light,
  saturated consumer furniture colours, a consumer RGB-D sensor: depth noise growing with distance,
  frequent holes, no depth on glass, registration drift between frames, sparse fused points.
* ``synth-s3dis`` - S3DIS: large office and conference rooms with ceilings, many chairs around long
  tables, bookcases, no beds (S3DIS has none), cool fluorescent light with strong ambient, dull
  grey/desaturated surfaces, a survey-grade scanner: little noise, no drift, dense points.
* ``synth-matterport`` - Matterport3D: rooms of whole homes of any kind with ceilings, beds, sofas and
  cabinets, rich palettes, daylight with strong fall-off, a tripod panorama camera: medium noise,
  stitching errors, coarser fused points.

Each scene is a pure function of (domain, split, index, seed): its generator is seeded by a hash of
those four values, so splits never share scenes.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bench.data.classes import CLASS_ID, IGNORE, NUM_CLASSES
from bench.data.scene import Scene, View

GENERATOR_VERSION = 3  # bump when the generator changes: cached scenes are keyed by it

C = CLASS_ID


@dataclass(frozen=True)
class Domain:
    name: str
    room_x: tuple[float, float]
    room_y: tuple[float, float]
    height: tuple[float, float]
    ceiling: bool
    counts: dict[str, tuple[int, int]]  # class -> (min, max) number of objects
    size_scale: tuple[float, float]  # furniture proportions
    palette: dict[str, tuple[float, float, float, float]]  # class -> (hue, hue spread, sat, value)
    sat_scale: float
    kelvin: tuple[float, float]
    ambient: tuple[float, float]
    lamp: tuple[float, float]
    falloff: float
    texture: float
    voxel: float  # fusion voxel: the point density of the sensor
    depth_noise: float  # std in metres at 1 m, grows with depth squared
    reg_rot_deg: float  # per-frame pose error (rotation std)
    reg_trans: float  # per-frame pose error (translation std, metres)
    hole_rate: float  # fraction of scan pixels dropped in blobs
    glass_depth: bool  # whether the sensor sees windows
    classes: tuple[int, ...] = ()


_PALETTE_COMMON = {
    "wall": (0.10, 0.05, 0.10, 0.85),
    "floor": (0.08, 0.04, 0.45, 0.55),
    "ceiling": (0.12, 0.05, 0.05, 0.92),
    "chair": (0.60, 0.50, 0.55, 0.50),
    "table": (0.08, 0.04, 0.50, 0.55),
    "sofa": (0.95, 0.30, 0.55, 0.50),
    "bed": (0.58, 0.40, 0.35, 0.80),
    "cabinet": (0.09, 0.04, 0.45, 0.60),
    "bookshelf": (0.07, 0.03, 0.55, 0.45),
    "door": (0.08, 0.03, 0.50, 0.60),
    "window": (0.55, 0.05, 0.25, 0.90),
    "clutter": (0.00, 0.50, 0.60, 0.70),
    "other": (0.30, 0.50, 0.40, 0.60),
}

DOMAINS: dict[str, Domain] = {
    "synth-scannet": Domain(
        name="synth-scannet", room_x=(3.0, 5.0), room_y=(2.8, 4.2), height=(2.4, 2.7), ceiling=False,
        counts={"bed": (0, 1), "sofa": (0, 1), "chair": (1, 4), "table": (1, 2), "cabinet": (1, 3),
                "bookshelf": (0, 1), "door": (1, 1), "window": (1, 2), "clutter": (3, 8), "other": (1, 3)},
        size_scale=(0.85, 1.05),
        palette={**_PALETTE_COMMON, "wall": (0.11, 0.06, 0.18, 0.80), "floor": (0.07, 0.03, 0.55, 0.45),
                 "chair": (0.02, 0.40, 0.65, 0.55), "sofa": (0.60, 0.20, 0.60, 0.45)},
        sat_scale=1.0, kelvin=(2700, 3500), ambient=(0.35, 0.5), lamp=(0.5, 0.8), falloff=0.15,
        texture=0.10, voxel=0.08, depth_noise=0.012, reg_rot_deg=0.8, reg_trans=0.015, hole_rate=0.08,
        glass_depth=False,
        classes=tuple(sorted(set(range(NUM_CLASSES)) - {C["ceiling"]})),
    ),
    "synth-s3dis": Domain(
        name="synth-s3dis", room_x=(4.5, 7.0), room_y=(3.5, 5.5), height=(2.8, 3.2), ceiling=True,
        counts={"sofa": (0, 1), "chair": (4, 10), "table": (1, 3), "cabinet": (0, 2),
                "bookshelf": (1, 3), "door": (1, 2), "window": (0, 2), "clutter": (4, 10), "other": (0, 2)},
        size_scale=(1.0, 1.25),
        palette={**_PALETTE_COMMON, "wall": (0.60, 0.03, 0.05, 0.70), "floor": (0.60, 0.03, 0.10, 0.40),
                 "chair": (0.62, 0.10, 0.25, 0.30), "table": (0.10, 0.02, 0.15, 0.70)},
        sat_scale=0.45, kelvin=(5000, 6500), ambient=(0.55, 0.7), lamp=(0.3, 0.45), falloff=0.05,
        texture=0.05, voxel=0.06, depth_noise=0.003, reg_rot_deg=0.0, reg_trans=0.0, hole_rate=0.02,
        glass_depth=True,
        classes=tuple(sorted(set(range(NUM_CLASSES)) - {C["bed"]})),
    ),
    "synth-matterport": Domain(
        name="synth-matterport", room_x=(3.5, 6.0), room_y=(3.2, 5.0), height=(2.5, 3.0), ceiling=True,
        counts={"bed": (0, 2), "sofa": (0, 2), "chair": (1, 4), "table": (1, 2), "cabinet": (1, 4),
                "bookshelf": (0, 2), "door": (1, 2), "window": (1, 3), "clutter": (2, 6), "other": (1, 3)},
        size_scale=(0.9, 1.15),
        palette={**_PALETTE_COMMON, "wall": (0.30, 0.25, 0.25, 0.75), "sofa": (0.35, 0.45, 0.55, 0.45),
                 "bed": (0.85, 0.35, 0.45, 0.75), "cabinet": (0.05, 0.30, 0.55, 0.35)},
        sat_scale=1.25, kelvin=(4000, 7000), ambient=(0.25, 0.4), lamp=(0.7, 1.0), falloff=0.35,
        texture=0.15, voxel=0.09, depth_noise=0.006, reg_rot_deg=0.4, reg_trans=0.01, hole_rate=0.04,
        glass_depth=False,
        classes=tuple(range(NUM_CLASSES)),
    ),
}


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the generated data (the same for every domain)."""

    views: int = 10  # paired views per scene
    view_hw: tuple[int, int] = (96, 128)
    view_fov_deg: float = 70.0
    scan_hw: tuple[int, int] = (48, 64)
    scan_fov_deg: float = 80.0
    scan_positions: int = 2
    scan_yaws: int = 8
    max_points: int = 20000


SPLIT_SIZES = {"train": 10_000, "val": 10_000, "test": 10_000}


def scene_seed(domain: str, split: str, index: int, seed: int) -> int:
    h = hashlib.sha256(f"{domain}|{split}|{index}|{seed}|v{GENERATOR_VERSION}".encode()).digest()
    return int.from_bytes(h[:8], "little")


# --------------------------------------------------------------------------------------- geometry
@dataclass
class Boxes:
    """Oriented boxes (rotated about z): centre, half extent, yaw, label, albedo, texture frequency."""

    center: list = field(default_factory=list)
    half: list = field(default_factory=list)
    yaw: list = field(default_factory=list)
    label: list = field(default_factory=list)
    albedo: list = field(default_factory=list)
    texfreq: list = field(default_factory=list)

    def add(self, center, half, yaw, label, albedo, texfreq=4.0):
        self.center.append(center)
        self.half.append(half)
        self.yaw.append(yaw)
        self.label.append(label)
        self.albedo.append(albedo)
        self.texfreq.append(texfreq)

    def tensors(self):
        return (torch.tensor(np.array(self.center), dtype=torch.float32),
                torch.tensor(np.array(self.half), dtype=torch.float32),
                torch.tensor(np.array(self.yaw), dtype=torch.float32),
                torch.tensor(np.array(self.label), dtype=torch.int64),
                torch.tensor(np.array(self.albedo), dtype=torch.float32),
                torch.tensor(np.array(self.texfreq), dtype=torch.float32))


def _color(rng, dom: Domain, cls: str) -> np.ndarray:
    h, hs, s, v = dom.palette[cls]
    hue = (h + rng.uniform(-hs, hs)) % 1.0
    sat = float(np.clip(s * dom.sat_scale * rng.uniform(0.7, 1.3), 0, 1))
    val = float(np.clip(v * rng.uniform(0.8, 1.2), 0.05, 1))
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)


def _local_boxes(kind: str, rng, s: float):
    """Parts of one object in its own frame (origin on the floor at its centre, front = -y).

    Returns (footprint half extents (hx, hy), [(centre, half, part label key)]).
    """
    parts = []
    u = lambda a, b: rng.uniform(a, b) * s  # noqa: E731
    if kind == "chair":
        w, d, sh = u(0.20, 0.26), u(0.20, 0.25), u(0.40, 0.48)
        leg = 0.025
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(((sx * (w - leg), sy * (d - leg), sh / 2), (leg, leg, sh / 2), "main"))
        parts.append(((0, 0, sh + 0.03), (w, d, 0.03), "main"))
        bh = u(0.35, 0.50)
        parts.append(((0, d - 0.03, sh + 0.06 + bh / 2), (w, 0.03, bh / 2), "main"))
        return (w, d), parts
    if kind == "table":
        w, d, h = u(0.45, 0.9), u(0.35, 0.5), u(0.70, 0.78)
        leg = 0.03
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(((sx * (w - 0.06), sy * (d - 0.06), h / 2), (leg, leg, h / 2), "main"))
        parts.append(((0, 0, h - 0.02), (w, d, 0.025), "main"))
        return (w, d), parts
    if kind == "sofa":
        w, d, sh = u(0.8, 1.1), u(0.40, 0.48), u(0.38, 0.45)
        parts.append(((0, 0, sh / 2), (w, d, sh / 2), "main"))
        parts.append(((0, d - 0.1, sh + 0.22), (w, 0.1, 0.22), "main"))
        for sx in (-1, 1):
            parts.append(((sx * (w - 0.08), -0.05, sh + 0.1), (0.08, d - 0.05, 0.1), "main"))
        return (w, d), parts
    if kind == "bed":
        w, d = u(0.45, 0.85), u(0.95, 1.05)
        parts.append(((0, 0, 0.2), (w, d, 0.2), "frame"))
        parts.append(((0, -0.03, 0.47), (w - 0.03, d - 0.06, 0.08), "main"))
        parts.append(((0, d - 0.04, 0.55), (w, 0.04, 0.55), "frame"))
        return (w, d), parts
    if kind == "cabinet":
        w, d, h = u(0.3, 0.6), u(0.22, 0.3), u(0.6, 1.2)
        parts.append(((0, 0, h / 2), (w, d, h / 2), "main"))
        parts.append(((0, -d - 0.005, h * 0.75), (0.04, 0.01, 0.01), "main"))
        return (w, d), parts
    if kind == "bookshelf":
        w, d, h = u(0.35, 0.6), u(0.15, 0.2), u(1.4, 2.0)
        t = 0.02
        for sx in (-1, 1):
            parts.append(((sx * (w - t), 0, h / 2), (t, d, h / 2), "main"))
        parts.append(((0, d - t, h / 2), (w, t, h / 2), "main"))
        n_shelves = int(rng.integers(4, 6))
        for i in range(n_shelves + 1):
            z = i * (h - t) / n_shelves + t
            parts.append(((0, 0, z), (w, d, t), "main"))
            if i < n_shelves:  # books: part of the bookshelf class, as in S3DIS' bookcase
                x = -w + 2 * t
                while x < w - 2 * t - 0.1:  # books in runs of similar height
                    bw = min(rng.uniform(0.04, 0.15), (w - 2 * t - x) / 2)
                    bh = rng.uniform(0.6, 0.9) * (h - t) / n_shelves / 2
                    if rng.random() < 0.75:
                        parts.append(((x + bw, -0.01, z + t + bh), (bw, d * 0.8, bh), "book"))
                    x += 2 * bw + 0.01
        return (w, d), parts
    if kind == "clutter":
        w, d, h = rng.uniform(0.05, 0.18), rng.uniform(0.05, 0.18), rng.uniform(0.05, 0.3)
        parts.append(((0, 0, h), (w, d, h), "main"))
        return (w, d), parts
    raise ValueError(kind)


class _Room:
    """Builds one room's boxes; keeps the occupied floor footprint to avoid interpenetration."""

    def __init__(self, dom: Domain, rng: np.random.Generator):
        self.dom, self.rng = dom, rng
        self.lx, self.ly = rng.uniform(*dom.room_x), rng.uniform(*dom.room_y)
        self.h = rng.uniform(*dom.height)
        self.boxes = Boxes()
        self.occupied: list[tuple[float, float, float, float]] = []  # xmin, ymin, xmax, ymax
        self.tops: list[tuple[float, float, float, float, float]] = []  # surfaces for clutter
        self.scale = rng.uniform(*dom.size_scale)
        t = 0.1
        wall_c = _color(rng, dom, "wall")
        lx, ly, h = self.lx, self.ly, self.h
        self.boxes.add((lx / 2, ly / 2, -t), (lx / 2 + t, ly / 2 + t, t), 0.0, C["floor"],
                       _color(rng, dom, "floor"), rng.uniform(3, 8))
        for c, hf in (((lx / 2, -t, h / 2), (lx / 2 + t, t, h / 2)), ((lx / 2, ly + t, h / 2), (lx / 2 + t, t, h / 2)),
                      ((-t, ly / 2, h / 2), (t, ly / 2 + t, h / 2)), ((lx + t, ly / 2, h / 2), (t, ly / 2 + t, h / 2))):
            self.boxes.add(c, hf, 0.0, C["wall"], wall_c * rng.uniform(0.95, 1.05), 1.0)
        if dom.ceiling:
            self.boxes.add((lx / 2, ly / 2, h + t), (lx / 2 + t, ly / 2 + t, t), 0.0, C["ceiling"],
                           _color(rng, dom, "ceiling"), 1.0)

    def free(self, x0, y0, x1, y1, margin=0.05) -> bool:
        if x0 < 0 or y0 < 0 or x1 > self.lx or y1 > self.ly:
            return False
        return all(x1 + margin <= a0 or x0 - margin >= a1 or y1 + margin <= b0 or y0 - margin >= b1
                   for a0, b0, a1, b1 in self.occupied)

    def place(self, kind: str, cls: str, against_wall: bool, tries: int = 40) -> bool:
        rng = self.rng
        (hx, hy), parts = _local_boxes(kind, rng, self.scale)
        for _ in range(tries):
            if against_wall:
                side = int(rng.integers(4))
                yaw = [0.0, math.pi, -math.pi / 2, math.pi / 2][side]  # back of the object to the wall
                ex, ey = (hx, hy) if side < 2 else (hy, hx)
                if side == 0:
                    x, y = rng.uniform(ex, self.lx - ex), self.ly - ey - 0.01
                elif side == 1:
                    x, y = rng.uniform(ex, self.lx - ex), ey + 0.01
                elif side == 2:
                    x, y = self.lx - ex - 0.01, rng.uniform(ey, self.ly - ey)
                else:
                    x, y = ex + 0.01, rng.uniform(ey, self.ly - ey)
            else:
                yaw = float(rng.integers(4)) * math.pi / 2 + rng.normal(0, 0.15)
                c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
                ex, ey = hx * c + hy * s, hx * s + hy * c
                x, y = rng.uniform(ex, self.lx - ex), rng.uniform(ey, self.ly - ey)
            box = (x - ex, y - ey, x + ex, y + ey)
            if self.free(*box):
                self.occupied.append(box)
                self._add_parts(parts, x, y, 0.0, yaw, cls)
                if kind in ("table", "cabinet"):
                    top = max(p[0][2] + p[1][2] for p in parts)
                    self.tops.append((x - ex * 0.7, y - ey * 0.7, x + ex * 0.7, y + ey * 0.7, top))
                return True
        return False

    def _add_parts(self, parts, x, y, z, yaw, cls):
        rng, dom = self.rng, self.dom
        c, s = math.cos(yaw), math.sin(yaw)
        base = _color(rng, dom, cls if cls in dom.palette else "other")
        alt = _color(rng, dom, cls if cls in dom.palette else "other")
        label = C[cls] if cls in C else IGNORE
        for (px, py, pz), half, part in parts:
            col = base if part == "main" else alt
            if part == "book":
                col = np.array(colorsys.hsv_to_rgb(rng.random(), 0.6 * dom.sat_scale, rng.uniform(0.3, 0.8)),
                               dtype=np.float32)
            self.boxes.add((x + c * px - s * py, y + s * px + c * py, z + pz), half, yaw, label, col,
                           rng.uniform(2, 10))

    def wall_item(self, cls: str) -> bool:
        """Doors, windows and pictures: thin boxes standing slightly out of a wall."""
        rng = self.rng
        if cls == "door":
            w, h, z0 = rng.uniform(0.4, 0.5), rng.uniform(1.0, 1.05), 0.0
        elif cls == "window":
            w, h, z0 = rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.7), rng.uniform(0.8, 1.0)
        else:  # picture: no shared class
            w, h, z0 = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.3), rng.uniform(1.2, 1.6)
        side = int(rng.integers(4))
        length = self.lx if side < 2 else self.ly
        if length < 2 * w + 0.2:
            return False
        u = rng.uniform(w + 0.05, length - w - 0.05)
        d = 0.03
        zc = z0 + h
        if side == 0:
            c, half, fp = (u, d, zc), (w, d, h), (u - w, 0, u + w, 0.3)
        elif side == 1:
            c, half, fp = (u, self.ly - d, zc), (w, d, h), (u - w, self.ly - 0.3, u + w, self.ly)
        elif side == 2:
            c, half, fp = (d, u, zc), (d, w, h), (0, u - w, 0.3, u + w)
        else:
            c, half, fp = (self.lx - d, u, zc), (d, w, h), (self.lx - 0.3, u - w, self.lx, u + w)
        if cls == "door":
            if not self.free(*fp, margin=0.3):
                return False
            self.occupied.append(fp)
        label = C[cls] if cls in C else IGNORE
        self.boxes.add(c, half, 0.0, label, _color(rng, self.dom, cls if cls in self.dom.palette else "other"),
                       rng.uniform(2, 6))
        return True

    def clutter(self) -> bool:
        rng = self.rng
        (hx, hy), parts = _local_boxes("clutter", rng, 1.0)
        if self.tops and rng.random() < 0.7:
            x0, y0, x1, y1, top = self.tops[int(rng.integers(len(self.tops)))]
            if x1 - x0 > 2 * hx and y1 - y0 > 2 * hy:
                x, y = rng.uniform(x0 + hx, x1 - hx), rng.uniform(y0 + hy, y1 - hy)
                self._add_parts(parts, x, y, top, 0.0, "clutter")
                return True
        return self.place("clutter", "clutter", against_wall=False, tries=10)


def build_room(dom: Domain, rng: np.random.Generator) -> _Room:
    room = _Room(dom, rng)
    n = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in dom.counts.items()}
    for _ in range(n.get("door", 0)):
        room.wall_item("door")
    for _ in range(n.get("window", 0)):
        room.wall_item("window")
    for _ in range(n.get("other", 0)):
        room.wall_item("picture")
    for kind in ("bed", "sofa", "bookshelf", "cabinet"):
        for _ in range(n.get(kind, 0)):
            room.place(kind, kind, against_wall=True)
    for _ in range(n.get("table", 0)):
        room.place("table", "table", against_wall=rng.random() < 0.4)
    for _ in range(n.get("chair", 0)):
        room.place("chair", "chair", against_wall=False)
    for _ in range(n.get("clutter", 0)):
        room.clutter()
    return room


# --------------------------------------------------------------------------------------- rendering
def raycast(origins: torch.Tensor, dirs: torch.Tensor, boxes, chunk: int = 8192):
    """Nearest hit of each ray with the oriented boxes: (t, box index, world normal); t=inf for a miss."""
    center, half, yaw = boxes[0], boxes[1], boxes[2]
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    ts, idxs, normals = [], [], []
    for i in range(0, origins.shape[0], chunk):
        o = origins[i:i + chunk, None, :] - center[None]  # (R,B,3)
        d = dirs[i:i + chunk, None, :].expand_as(o)
        # into each box's frame: rotate by -yaw about z
        ol = torch.stack([cy * o[..., 0] + sy * o[..., 1], -sy * o[..., 0] + cy * o[..., 1], o[..., 2]], -1)
        dl = torch.stack([cy * d[..., 0] + sy * d[..., 1], -sy * d[..., 0] + cy * d[..., 1], d[..., 2]], -1)
        inv = 1.0 / torch.where(dl.abs() < 1e-9, torch.full_like(dl, 1e-9), dl)
        t1, t2 = (-half[None] - ol) * inv, (half[None] - ol) * inv
        tlo, thi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        tnear, axis = tlo.max(-1)
        tfar = thi.min(-1).values
        hit = (tfar >= tnear) & (tnear > 1e-4)
        tnear = torch.where(hit, tnear, torch.full_like(tnear, float("inf")))
        t, b = tnear.min(-1)
        ax = axis.gather(1, b[:, None])[:, 0]
        sgn = -torch.sign(dl[torch.arange(len(b)), b, ax])
        nl = torch.zeros(len(b), 3)
        nl[torch.arange(len(b)), ax] = sgn
        c, s = cy[b], sy[b]
        n = torch.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)
        ts.append(t), idxs.append(b), normals.append(n)
    return torch.cat(ts), torch.cat(idxs), torch.cat(normals)


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
    """Colour of surface points: textured albedo x (ambient + lamp diffuse with fall-off) x tint."""
    albedo, texfreq = boxes[4][box_idx], boxes[5][box_idx]
    lamp = torch.tensor(light.lamp_pos, dtype=torch.float32)
    to_l = lamp[None] - points
    dist = to_l.norm(dim=1, keepdim=True).clamp_min(1e-3)
    diffuse = (normals * to_l / dist).sum(1, keepdim=True).clamp_min(0.0)
    inten = light.ambient + light.lamp * diffuse / (1.0 + light.falloff * dist ** 2)
    f = texfreq[:, None]
    tex = 1.0 + light.texture * (torch.sin(f * points[:, :1] * 6.0) * torch.sin(f * points[:, 1:2] * 5.0 + 1.0)
                                 + 0.5 * torch.sin(f * points[:, 2:3] * 7.0))
    col = albedo * inten * tex * torch.tensor(light.tint)[None]
    return col.clamp(0.0, 1.0)


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
    h, w = hw
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float32)


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
    t, b, n = raycast(o, d, [x[keep] for x in boxes[:3]])
    b = keep[b]
    hit = torch.isfinite(t)
    tt = torch.where(hit, t, torch.zeros_like(t))
    pts = o + d * tt[:, None]
    col = shade(pts, n, b, boxes, light)
    col[~hit] = 0.0
    depth = torch.where(hit, tt * zpt, torch.zeros_like(t))
    label = torch.where(hit, boxes[3][b], torch.full_like(b, IGNORE))
    return col, depth, label, pts, n, b, hit


def _free_spot(room: _Room, rng, z: float):
    for _ in range(50):
        x, y = rng.uniform(0.4, room.lx - 0.4), rng.uniform(0.4, room.ly - 0.4)
        if room.free(x - 0.15, y - 0.15, x + 0.15, y + 0.15, margin=0.0):
            return np.array([x, y, z])
    return np.array([room.lx / 2, room.ly / 2, z])


def _rot(rng, deg: float) -> np.ndarray:
    a = rng.normal(0, math.radians(deg), 3)
    (cx, cy, cz), (sx, sy, sz) = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _blob_mask(rng, hw, rate: float) -> np.ndarray:
    """Pixels lost in blobs (specular, dark or far surfaces), about ``rate`` of the image."""
    h, w = hw
    low = rng.random((-(-h // 8), -(-w // 8)))
    up = np.kron(low, np.ones((8, 8)))[:h, :w]
    return up < rate


def generate_scene(domain: str, split: str, index: int, seed: int = 0, cfg: SynthConfig = SynthConfig()) -> Scene:
    """Generate one scene: a pure function of (domain, split, index, seed) and the config."""
    dom = DOMAINS[domain]
    rng = np.random.default_rng(scene_seed(domain, split, index, seed))
    room = build_room(dom, rng)
    boxes = room.boxes.tensors()
    light = Lighting(
        ambient=rng.uniform(*dom.ambient),
        lamp_pos=np.array([rng.uniform(0.3, 0.7) * room.lx, rng.uniform(0.3, 0.7) * room.ly, room.h - 0.2]),
        lamp=rng.uniform(*dom.lamp), falloff=dom.falloff,
        tint=kelvin_rgb(rng.uniform(*dom.kelvin)), texture=dom.texture,
    )
    center = np.array([room.lx / 2, room.ly / 2, 0.0])

    # ---- scan: sweep the room from a few positions, fuse back-projected depth into points
    k_scan = intrinsic_for(cfg.scan_hw, cfg.scan_fov_deg)
    pts_all, col_all, nrm_all, lab_all = [], [], [], []
    for _ in range(cfg.scan_positions):
        eye = _free_spot(room, rng, rng.uniform(1.2, 1.6))
        for j in range(cfg.scan_yaws):
            for pitch in (-0.35, -0.9, 0.25):
                yaw = 2 * math.pi * (j + rng.random() * 0.5) / cfg.scan_yaws
                tgt = eye + np.array([math.cos(yaw), math.sin(yaw), math.tan(pitch)])
                pose = look_at(eye, tgt)
                col, depth, label, pts, n, b, hit = render(boxes, light, k_scan, pose, cfg.scan_hw)
                keep = hit.numpy() & ~_blob_mask(rng, cfg.scan_hw, dom.hole_rate).reshape(-1)
                if not dom.glass_depth:
                    keep &= (label.numpy() != C["window"])
                keep &= depth.numpy() < 6.0  # sensor range
                idx = np.nonzero(keep)[0]
                dd = depth.numpy()[idx]
                dd = dd + rng.normal(0, 1, len(dd)) * dom.depth_noise * dd ** 2
                o, dirs, zpt = camera_rays(k_scan, pose, cfg.scan_hw)
                q = o.numpy()[idx] + dirs.numpy()[idx] * (dd / zpt.numpy()[idx])[:, None]
                # registration error: the frame is fused with a slightly wrong pose
                r_err = _rot(rng, dom.reg_rot_deg)
                t_err = rng.normal(0, dom.reg_trans, 3)
                q = (q - eye) @ r_err.T + eye + t_err
                pts_all.append(q), col_all.append(col.numpy()[idx]), nrm_all.append(n.numpy()[idx] @ r_err.T)
                lab_all.append(label.numpy()[idx])
    pts = np.concatenate(pts_all).astype(np.float32)
    col = np.concatenate(col_all)
    nrm = np.concatenate(nrm_all).astype(np.float32)
    lab = np.concatenate(lab_all)
    col = np.clip(col + rng.normal(0, 0.015, col.shape), 0, 1).astype(np.float32)  # sensor colour noise
    # fuse on the domain's voxel grid: one point per occupied voxel (a random one of its samples)
    vox = np.floor(pts / dom.voxel).astype(np.int64)
    vox -= vox.min(0)
    key = (vox[:, 0] * (vox[:, 1].max() + 1) + vox[:, 1]) * (vox[:, 2].max() + 1) + vox[:, 2]
    order = rng.permutation(len(pts))
    _, first = np.unique(key[order], return_index=True)
    sel = np.sort(order[first])
    if len(sel) > cfg.max_points:
        sel = np.sort(rng.choice(sel, cfg.max_points, replace=False))
    pts, col, nrm, lab = pts[sel], col[sel], nrm[sel], lab[sel]
    allowed = np.zeros(NUM_CLASSES + 1, dtype=bool)
    allowed[list(dom.classes)] = True
    lab = np.where((lab >= 0) & allowed[np.clip(lab, 0, None)], lab, IGNORE).astype(np.int64)

    # ---- paired views: K posed cameras looking into the room
    k_view = intrinsic_for(cfg.view_hw, cfg.view_fov_deg)
    views = []
    for v in range(cfg.views):
        eye = _free_spot(room, rng, rng.uniform(1.0, 1.7))
        tgt = center + np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.0)])
        if np.linalg.norm((tgt - eye)[:2]) < 0.5:
            tgt = eye + np.array([math.cos(v), math.sin(v), -0.3])
        pose = look_at(eye, tgt)
        colv, depth, label, *_ = render(boxes, light, k_view, pose, cfg.view_hw)
        h, w = cfg.view_hw
        img = np.clip(colv.numpy() + rng.normal(0, 0.01, colv.shape), 0, 1).reshape(h, w, 3)
        labv = label.numpy().reshape(h, w)
        labv = np.where((labv >= 0) & allowed[np.clip(labv, 0, None)], labv, IGNORE)
        views.append(View(image=(img * 255 + 0.5).astype(np.uint8), intrinsic=k_view, cam_to_world=pose,
                          depth=depth.numpy().reshape(h, w).astype(np.float32), label=labv.astype(np.int64)))
    name = f"{split}_{index:04d}"
    return Scene(name, domain, pts, col, lab, nrm, views).validate(num_classes=NUM_CLASSES)


def with_config(**kw) -> SynthConfig:
    return replace(SynthConfig(), **kw)
