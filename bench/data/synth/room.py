"""Rooms as oriented boxes: walls, floor, optional ceiling and furniture placed without overlap."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.data.classes import IGNORE
from bench.data.synth.domains import C, Domain


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
