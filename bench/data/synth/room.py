"""Rooms as oriented boxes: room types with their furniture, objects in several styles, placed without overlap.

A room type (``ROOM_TYPES``) fixes the floor-plan size, the furniture kinds and how many of each, and
which styles of a class fit the room (a conference room's table is a conference, rectangular or
round table); the domain (``bench.data.synth.domains``) draws the room type and, among the styles a
room allows, each object's style with its own probabilities. Every object is a set of oriented boxes
in its own frame (origin on the floor at its centre, front = -y), built by ``_local_boxes``.
Objects without a shared class (toilets, sinks, bathtubs, kitchen appliances, boards, pictures,
counter tops) are labelled ignore, as ScanNet's and S3DIS' non-benchmark classes are.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.data.classes import IGNORE
from bench.data.synth.domains import ROOM_TYPES as ROOM_TYPE_NAMES
from bench.data.synth.domains import STYLES, C, Domain


@dataclass
class Boxes:
    """Oriented boxes (rotated about z): centre, half extent, yaw, label, albedo, texture frequency, emission."""

    center: list = field(default_factory=list)
    half: list = field(default_factory=list)
    yaw: list = field(default_factory=list)
    label: list = field(default_factory=list)
    albedo: list = field(default_factory=list)
    texfreq: list = field(default_factory=list)
    emit: list = field(default_factory=list)  # > 0: a light-transmitting surface (window glass) of this brightness

    def add(self, center, half, yaw, label, albedo, texfreq=4.0, emit=0.0):
        self.emit.append(emit)
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
                torch.tensor(np.array(self.texfreq), dtype=torch.float32),
                torch.tensor(np.array(self.emit), dtype=torch.float32))


# ------------------------------------------------------------------------------------ room types
@dataclass(frozen=True)
class RoomType:
    """A kind of room: floor-plan size, height, furniture counts (min, max) and allowed styles."""

    x: tuple[float, float]
    y: tuple[float, float]
    height: tuple[float, float]
    items: dict[str, tuple[int, int]]  # kind -> (min, max) count; kinds: classes, 'fixture', 'appliance', ...
    styles: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class -> styles that fit this room
    table_wall: float = 0.4  # probability that a table stands against a wall
    chairs_at_tables: float = 0.7  # probability that a chair is placed at a table (facing it)


ROOM_TYPES: dict[str, RoomType] = {
    "bedroom": RoomType((3.0, 4.4), (2.8, 3.9), (2.4, 2.7),
                        {"bed": (1, 1), "cabinet": (1, 3), "chair": (1, 3), "table": (1, 1), "bookshelf": (0, 1),
                         "door": (1, 2), "window": (1, 2), "clutter": (3, 7), "picture": (0, 2)},
                        {"table": ("desk", "rect", "pedestal"), "cabinet": ("low", "tall"),
                         "chair": ("four_leg", "swivel", "armchair", "sled")}, table_wall=0.8),
    "living_room": RoomType((3.6, 5.4), (3.2, 4.6), (2.4, 2.8),
                            {"sofa": (1, 2), "table": (1, 3), "chair": (2, 5), "cabinet": (1, 2), "bookshelf": (0, 2),
                             "door": (1, 2), "window": (1, 3), "clutter": (4, 9), "picture": (1, 3)},
                            {"table": ("coffee", "round", "rect", "pedestal"), "cabinet": ("low", "tall"),
                             "chair": ("armchair", "four_leg", "stool")}, table_wall=0.1, chairs_at_tables=0.5),
    "kitchen": RoomType((2.6, 4.0), (2.4, 3.6), (2.4, 2.7),
                        {"cabinet": (3, 6), "table": (1, 2), "chair": (2, 6), "appliance": (1, 2), "door": (1, 2),
                         "window": (0, 1), "clutter": (5, 10)},
                        {"cabinet": ("kitchen",), "table": ("rect", "round", "pedestal"),
                         "chair": ("four_leg", "stool", "sled")}, table_wall=0.2, chairs_at_tables=0.9),
    "bathroom": RoomType((1.8, 3.0), (1.6, 2.6), (2.3, 2.6),
                         {"fixture": (2, 3), "cabinet": (0, 1), "door": (1, 1), "window": (0, 1), "clutter": (1, 4)},
                         {"cabinet": ("low", "tall")}),
    "office": RoomType((3.0, 5.0), (2.8, 4.4), (2.6, 3.0),
                       {"table": (2, 4), "chair": (4, 8), "cabinet": (1, 3), "bookshelf": (1, 2), "door": (1, 2),
                        "window": (0, 2), "clutter": (6, 12), "board": (0, 1), "picture": (0, 1), "sofa": (0, 1)},
                       {"table": ("desk", "rect"), "cabinet": ("file", "low", "tall"),
                        "chair": ("swivel", "sled", "four_leg")}, table_wall=0.75, chairs_at_tables=0.9),
    "conference_room": RoomType((4.5, 7.0), (3.5, 5.2), (2.7, 3.1),
                                {"table": (1, 2), "chair": (8, 14), "cabinet": (0, 1), "door": (1, 2), "window": (0, 3),
                                 "clutter": (3, 7), "board": (1, 1)},
                                {"table": ("conference", "rect", "round"), "cabinet": ("low",),
                                 "chair": ("swivel", "sled", "four_leg")}, table_wall=0.0, chairs_at_tables=0.95),
    "hallway": RoomType((5.0, 8.0), (1.6, 2.4), (2.5, 3.0),
                        {"door": (2, 4), "window": (0, 1), "cabinet": (0, 1), "chair": (0, 2), "bookshelf": (0, 1),
                         "picture": (0, 2), "clutter": (0, 3), "board": (0, 1)},
                        {"cabinet": ("low", "file"), "chair": ("four_leg", "sled", "armchair")}),
    "storage": RoomType((2.2, 3.6), (2.0, 3.2), (2.4, 3.0),
                        {"bookshelf": (1, 3), "cabinet": (1, 3), "clutter": (8, 16), "door": (1, 2), "chair": (0, 2),
                         "table": (0, 1)},
                        {"bookshelf": ("tall", "wide"), "cabinet": ("tall", "file", "low"), "table": ("rect",)},
                        table_wall=0.9, chairs_at_tables=0.2),
    "lobby": RoomType((5.0, 7.5), (4.0, 5.8), (2.8, 3.3),
                      {"sofa": (1, 3), "chair": (3, 7), "table": (1, 3), "door": (2, 4), "window": (1, 3),
                       "clutter": (2, 6), "picture": (0, 2), "bookshelf": (0, 1), "cabinet": (0, 1)},
                      {"table": ("coffee", "round", "pedestal"), "chair": ("armchair", "four_leg", "sled")},
                      table_wall=0.0, chairs_at_tables=0.5),
}
assert tuple(ROOM_TYPES) == ROOM_TYPE_NAMES


def pick_style(rng: np.random.Generator, dom: Domain, cls: str, allowed: tuple[str, ...] | None) -> str:
    """A style of ``cls``: the domain's probabilities restricted to the room's allowed styles."""
    styles = allowed or STYLES[cls]
    probs = dom.styles.get(cls, {})
    w = np.array([float(probs.get(s, 0.0)) for s in styles])
    if w.sum() <= 0:
        w = np.ones(len(styles))
    return styles[int(rng.choice(len(styles), p=w / w.sum()))]


def _color(rng, dom: Domain, cls: str) -> np.ndarray:
    colors = dom.palette.colors
    h, hs, s, v = colors.get(cls) or colors.get("other") or (0.3, 0.5, 0.4, 0.6)
    hue = (h + rng.uniform(-hs, hs)) % 1.0
    sat = float(np.clip(s * dom.palette.sat_scale * rng.uniform(0.7, 1.3), 0, 1))
    val = float(np.clip(v * rng.uniform(0.8, 1.2), 0.05, 1))
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)


Part = tuple  # (centre, half, part key, yaw offset); part key: main | alt | book | ignore
WALL = 0.2  # wall thickness (metres): windows and doors sit in its depth


def _legs(parts, w, d, h, leg, inset=0.0):
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(((sx * (w - leg - inset), sy * (d - leg - inset), h / 2), (leg, leg, h / 2), "alt", 0.0))


def _local_boxes(kind: str, style: str, rng, s: float):
    """Parts of one object in its own frame (origin on the floor at its centre, front = -y).

    Returns (footprint half extents (hx, hy), [(centre, half, part key, yaw offset)]).
    """
    parts: list[Part] = []
    u = lambda a, b: rng.uniform(a, b) * s  # noqa: E731
    if kind == "chair":
        if style == "armchair":
            w, d, sh = u(0.34, 0.44), u(0.34, 0.42), u(0.36, 0.44)
            parts.append(((0, 0, sh / 2), (w, d, sh / 2), "main", 0.0))
            parts.append(((0, d - 0.08, sh + 0.2), (w, 0.08, 0.2), "main", 0.0))
            for sx in (-1, 1):
                parts.append(((sx * (w - 0.07), -0.04, sh + 0.1), (0.07, d - 0.04, 0.1), "main", 0.0))
            return (w, d), parts
        if style == "stool":
            w, sh = u(0.16, 0.21), u(0.55, 0.75)
            _legs(parts, w, w, sh, 0.02)
            parts.append(((0, 0, sh * 0.35), (w - 0.02, 0.012, 0.012), "alt", 0.0))  # foot rest
            parts.append(((0, 0, sh + 0.025), (w, w, 0.025), "main", 0.0))
            return (w, w), parts
        w, d, sh = u(0.20, 0.26), u(0.20, 0.25), u(0.42, 0.50)
        bh = u(0.30, 0.45)
        if style == "swivel":
            r = max(w, d) + 0.04
            for k in range(3):  # five-star base, drawn as three crossed bars
                parts.append(((0, 0, 0.04), (r, 0.025, 0.02), "alt", k * math.pi / 3))
            parts.append(((0, 0, (sh + 0.04) / 2), (0.03, 0.03, (sh - 0.04) / 2), "alt", 0.0))
            parts.append(((0, 0, sh + 0.03), (w, d, 0.04), "main", 0.0))
            parts.append(((0, d - 0.02, sh + 0.16 + bh / 2), (w * 0.9, 0.035, bh / 2), "main", 0.0))
            if rng.random() < 0.6:  # armrests
                for sx in (-1, 1):
                    parts.append(((sx * (w + 0.02), 0, sh + 0.2), (0.02, d * 0.6, 0.02), "alt", 0.0))
            return (r, r), parts
        if style == "sled":  # a U-shaped tube frame on each side, runners on the floor
            t = 0.015
            for sx in (-1, 1):
                parts.append(((sx * (w - t), 0, t), (t, d, t), "alt", 0.0))
                parts.append(((sx * (w - t), -d + t, sh / 2), (t, t, sh / 2), "alt", 0.0))
                parts.append(((sx * (w - t), d - t, (sh + bh) / 2), (t, t, (sh + bh) / 2), "alt", 0.0))
            parts.append(((0, 0, sh + 0.02), (w, d, 0.02), "main", 0.0))
            parts.append(((0, d - 0.03, sh + 0.1 + bh / 2), (w, 0.02, bh / 2), "main", 0.0))
            return (w, d), parts
        _legs(parts, w, d, sh, 0.025)  # four_leg
        parts.append(((0, 0, sh + 0.03), (w, d, 0.03), "main", 0.0))
        parts.append(((0, d - 0.03, sh + 0.06 + bh / 2), (w, 0.03, bh / 2), "main", 0.0))
        return (w, d), parts
    if kind == "table":
        if style == "round" or style == "pedestal":
            h = u(0.70, 0.77)
            if style == "round":
                r = u(0.40, 0.62)
                for k in range(3):  # a disc as three squares turned by 30 degrees
                    parts.append(((0, 0, h - 0.02), (r * 0.87, r * 0.87, 0.02), "main", k * math.pi / 6))
                hx = hy = r
            else:
                hx, hy = u(0.32, 0.5), u(0.32, 0.45)
                parts.append(((0, 0, h - 0.02), (hx, hy, 0.025), "main", 0.0))
            parts.append(((0, 0, h / 2), (0.04, 0.04, h / 2), "alt", 0.0))
            for k in range(2):
                parts.append(((0, 0, 0.02), (min(hx, hy) * 0.55, 0.03, 0.02), "alt", math.pi / 4 + k * math.pi / 2))
            return (hx, hy), parts
        if style == "coffee":
            w, d, h = u(0.40, 0.65), u(0.25, 0.38), u(0.38, 0.48)
            _legs(parts, w, d, h, 0.025)
            parts.append(((0, 0, h - 0.02), (w, d, 0.025), "main", 0.0))
            parts.append(((0, 0, 0.12), (w - 0.04, d - 0.04, 0.012), "main", 0.0))
            return (w, d), parts
        if style == "conference":
            w, d, h = u(1.0, 1.6), u(0.5, 0.65), u(0.72, 0.77)
            for sx in (-1, 1):
                parts.append(((sx * (w - 0.3), 0, h / 2), (0.03, d - 0.12, h / 2), "alt", 0.0))
            parts.append(((0, 0, h - 0.025), (w, d, 0.03), "main", 0.0))
            return (w, d), parts
        if style == "desk":
            w, d, h = u(0.55, 0.8), u(0.30, 0.40), u(0.72, 0.77)
            parts.append(((w - 0.2, 0, h / 2), (0.2, d - 0.01, h / 2 - 0.01), "alt", 0.0))  # drawer unit
            parts.append(((-w + 0.02, 0, h / 2), (0.02, d - 0.01, h / 2), "alt", 0.0))
            parts.append(((0, d - 0.03, h * 0.6), (w - 0.04, 0.01, h * 0.3), "alt", 0.0))  # modesty panel
            parts.append(((0, 0, h - 0.015), (w, d, 0.02), "main", 0.0))
            return (w, d), parts
        w, d, h = u(0.45, 0.9), u(0.35, 0.5), u(0.70, 0.78)  # rect
        _legs(parts, w, d, h, 0.03, 0.03)
        parts.append(((0, 0, h - 0.02), (w, d, 0.025), "main", 0.0))
        return (w, d), parts
    if kind == "sofa":
        seats = {"one_seat": 1, "two_seat": 2, "three_seat": 3}[style]
        sw = u(0.27, 0.33)
        arm = 0.09
        w, d, sh = seats * sw + arm, u(0.40, 0.48), u(0.36, 0.44)
        parts.append(((0, 0, 0.12), (w, d, 0.12), "main", 0.0))
        for k in range(seats):  # seat cushions
            x = -w + arm + (2 * k + 1) * sw
            parts.append(((x, -0.06, 0.24 + (sh - 0.24) / 2), (sw - 0.01, d - 0.08, (sh - 0.24) / 2), "main", 0.0))
        parts.append(((0, d - 0.1, sh + 0.2), (w, 0.1, 0.2 + sh / 2 - 0.12), "main", 0.0))
        for sx in (-1, 1):
            parts.append(((sx * (w - arm / 2 - 0.01), -0.05, sh + 0.08), (arm / 2 + 0.01, d - 0.05, 0.1), "main", 0.0))
        return (w, d), parts
    if kind == "bed":
        w = u(0.45, 0.55) if style == "single" else u(0.7, 0.9)
        d = u(0.95, 1.05)
        parts.append(((0, 0, 0.18), (w, d, 0.18), "alt", 0.0))
        parts.append(((0, -0.03, 0.44), (w - 0.03, d - 0.06, 0.08), "main", 0.0))
        n_pillows = 1 if style == "single" else 2
        for k in range(n_pillows):
            x = 0.0 if n_pillows == 1 else (k - 0.5) * w
            parts.append(((x, d - 0.22, 0.55), (min(0.3, w / n_pillows - 0.05), 0.15, 0.05), "main", 0.0))
        if style != "bare":
            parts.append(((0, d - 0.04, 0.5), (w, 0.04, 0.5), "alt", 0.0))
        return (w, d), parts
    if kind == "cabinet":
        if style == "kitchen":
            w, d, h = u(0.4, 0.9), u(0.28, 0.31), 0.86
            parts.append(((0, 0, h / 2), (w, d, h / 2), "main", 0.0))
            parts.append(((0, -0.02, h + 0.02), (w, d + 0.02, 0.02), "ignore", 0.0))  # counter top: no shared class
            if rng.random() < 0.6:  # a wall cabinet above
                parts.append(((0, d - 0.17, 1.85), (w, 0.17, 0.35), "main", 0.0))
            return (w, d), parts
        if style == "file":
            w, d, h = u(0.22, 0.3), u(0.28, 0.32), u(1.0, 1.35)
            parts.append(((0, 0, h / 2), (w, d, h / 2), "main", 0.0))
            n = int(rng.integers(3, 5))
            for k in range(n):
                parts.append(((0, -d - 0.01, (k + 0.5) * h / n), (w - 0.03, 0.01, h / n / 2 - 0.03), "alt", 0.0))
            return (w, d), parts
        if style == "tall":
            w, d, h = u(0.4, 0.6), u(0.25, 0.32), u(1.7, 2.0)
        else:  # low
            w, d, h = u(0.4, 0.8), u(0.22, 0.3), u(0.6, 0.9)
        parts.append(((0, 0, h / 2), (w, d, h / 2), "main", 0.0))
        parts.append(((0, -d - 0.005, h * 0.75), (0.04, 0.01, 0.01), "alt", 0.0))
        return (w, d), parts
    if kind == "bookshelf":
        if style == "low":
            w, d, h = u(0.35, 0.6), u(0.15, 0.2), u(0.8, 1.1)
        elif style == "wide":
            w, d, h = u(0.7, 1.0), u(0.18, 0.22), u(1.1, 1.6)
        else:
            w, d, h = u(0.35, 0.6), u(0.15, 0.2), u(1.5, 2.0)
        t = 0.02
        for sx in (-1, 1):
            parts.append(((sx * (w - t), 0, h / 2), (t, d, h / 2), "main", 0.0))
        parts.append(((0, d - t, h / 2), (w, t, h / 2), "main", 0.0))
        n_shelves = max(2, int(round(h / 0.38)))
        for i in range(n_shelves + 1):
            z = i * (h - t) / n_shelves + t
            parts.append(((0, 0, z), (w, d, t), "main", 0.0))
            if i < n_shelves:  # books: part of the bookshelf class, as in S3DIS' bookcase
                x = -w + 2 * t
                while x < w - 2 * t - 0.1:  # books in runs of similar height
                    bw = min(rng.uniform(0.06, 0.18), (w - 2 * t - x) / 2)
                    bh = rng.uniform(0.6, 0.9) * (h - t) / n_shelves / 2
                    if rng.random() < 0.7:
                        parts.append(((x + bw, -0.01, z + t + bh), (bw, d * 0.8, bh), "book", 0.0))
                    x += 2 * bw + 0.01
        return (w, d), parts
    if kind == "fixture":  # toilet, sink on a vanity, bathtub: no shared class
        which = style
        if which == "bathtub":
            w, d = u(0.7, 0.85), u(0.35, 0.4)
            parts.append(((0, 0, 0.25), (w, d, 0.25), "ignore", 0.0))
        elif which == "sink":
            w, d = u(0.3, 0.5), u(0.22, 0.28)
            parts.append(((0, 0, 0.42), (w, d, 0.42), "ignore", 0.0))
            parts.append(((0, d - 0.02, 1.3), (w * 0.8, 0.02, 0.3), "ignore", 0.0))  # mirror
        else:  # toilet
            w, d = u(0.18, 0.21), u(0.3, 0.35)
            parts.append(((0, -0.05, 0.2), (w, d - 0.05, 0.2), "ignore", 0.0))
            parts.append(((0, d - 0.09, 0.6), (w, 0.09, 0.2), "ignore", 0.0))
        return (w, d), parts
    if kind == "appliance":  # fridge or stove: no shared class
        if style == "fridge":
            w, d, h = u(0.3, 0.4), u(0.3, 0.35), u(0.85, 1.0)
        else:
            w, d, h = u(0.3, 0.38), u(0.28, 0.31), 0.45
        parts.append(((0, 0, h), (w, d, h), "ignore", 0.0))
        return (w, d), parts
    if kind == "clutter":
        w, d, h = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0.04, 0.3)
        if style == "box":  # boxes, bins, computers, printers on the floor
            w, d, h = rng.uniform(0.12, 0.3), rng.uniform(0.12, 0.3), rng.uniform(0.1, 0.35)
        parts.append(((0, 0, h), (w, d, h), "main", 0.0))
        return (w, d), parts
    raise ValueError(kind)


class _Room:
    """Builds one room's boxes; keeps the occupied floor footprint to avoid interpenetration."""

    def __init__(self, dom: Domain, kind: str, rng: np.random.Generator):
        self.dom, self.kind, self.rng = dom, kind, rng
        rt = self.type = ROOM_TYPES[kind]
        sc = rng.uniform(*dom.room_scale)
        self.lx, self.ly = rng.uniform(*rt.x) * sc, rng.uniform(*rt.y) * sc
        if rng.random() < 0.5 and kind != "hallway":
            self.lx, self.ly = self.ly, self.lx
        elif kind == "hallway" and rng.random() < 0.5:
            self.lx, self.ly = self.ly, self.lx
        self.h = rng.uniform(*rt.height)
        self.boxes = Boxes()
        self.occupied: list[tuple[float, float, float, float]] = []  # xmin, ymin, xmax, ymax
        self.tops: list[tuple[float, float, float, float, float]] = []  # surfaces for clutter
        self.tables: list[tuple[float, float, float, float]] = []  # x, y, half x, half y (axis-aligned)
        self.styles: list[tuple[str, str]] = []  # (class, style) of every placed object
        self.scale = rng.uniform(*dom.size_scale)
        t = WALL / 2
        self.wall_color = _color(rng, dom, "wall")
        self.daylight = float(rng.uniform(*dom.lighting.daylight))  # brightness of window glass (time of day)
        self.openings: dict[int, list[tuple[float, float, float, float]]] = {0: [], 1: [], 2: [], 3: []}
        lx, ly, h = self.lx, self.ly, self.h
        self.boxes.add((lx / 2, ly / 2, -t), (lx / 2 + t, ly / 2 + t, t), 0.0, C["floor"],
                       _color(rng, dom, "floor"), rng.uniform(3, 8))
        if dom.ceiling:
            self.boxes.add((lx / 2, ly / 2, h + t), (lx / 2 + t, ly / 2 + t, t), 0.0, C["ceiling"],
                           _color(rng, dom, "ceiling"), 1.0)

    def free(self, x0, y0, x1, y1, margin=0.05) -> bool:
        if x0 < 0 or y0 < 0 or x1 > self.lx or y1 > self.ly:
            return False
        return all(x1 + margin <= a0 or x0 - margin >= a1 or y1 + margin <= b0 or y0 - margin >= b1
                   for a0, b0, a1, b1 in self.occupied)

    def _style(self, cls: str) -> str:
        if cls in STYLES:
            return pick_style(self.rng, self.dom, cls, self.type.styles.get(cls))
        if cls == "fixture":
            return ("toilet", "sink", "bathtub")[int(self.rng.integers(3))]
        if cls == "appliance":
            return ("fridge", "stove")[int(self.rng.integers(2))]
        if cls == "clutter":
            return "box" if self.rng.random() < 0.35 else "small"
        return "plain"

    def place(self, kind: str, against_wall: bool, tries: int = 30, near_table: bool = False) -> bool:
        rng = self.rng
        style = self._style(kind)
        (hx, hy), parts = _local_boxes(kind, style, rng, self.scale)
        for _ in range(tries):
            if near_table and self.tables:  # a chair at a table's side, facing it
                tx, ty, thx, thy = self.tables[int(rng.integers(len(self.tables)))]
                side = int(rng.integers(4))
                along = rng.uniform(-0.8, 0.8)
                gap = hy * 0.6
                if side == 0:
                    x, y, yaw = tx + along * thx, ty - thy - gap, math.pi
                elif side == 1:
                    x, y, yaw = tx + along * thx, ty + thy + gap, 0.0
                elif side == 2:
                    x, y, yaw = tx - thx - gap, ty + along * thy, math.pi / 2
                else:
                    x, y, yaw = tx + thx + gap, ty + along * thy, -math.pi / 2
                yaw += rng.normal(0, 0.2)
                c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
                ex, ey = hx * c + hy * s, hx * s + hy * c
            elif against_wall:
                side = int(rng.integers(4))
                yaw = [0.0, math.pi, -math.pi / 2, math.pi / 2][side]  # back of the object to the wall
                ex, ey = (hx, hy) if side < 2 else (hy, hx)
                if side == 0:
                    x, y = rng.uniform(ex, max(ex, self.lx - ex)), self.ly - ey - 0.01
                elif side == 1:
                    x, y = rng.uniform(ex, max(ex, self.lx - ex)), ey + 0.01
                elif side == 2:
                    x, y = self.lx - ex - 0.01, rng.uniform(ey, max(ey, self.ly - ey))
                else:
                    x, y = ex + 0.01, rng.uniform(ey, max(ey, self.ly - ey))
            else:
                yaw = float(rng.integers(4)) * math.pi / 2 + rng.normal(0, 0.15)
                c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
                ex, ey = hx * c + hy * s, hx * s + hy * c
                x, y = rng.uniform(ex, max(ex, self.lx - ex)), rng.uniform(ey, max(ey, self.ly - ey))
            box = (x - ex, y - ey, x + ex, y + ey)
            margin = 0.0 if near_table else 0.05
            if self.free(*box, margin=margin):
                self.occupied.append(box)
                self._add_parts(parts, x, y, 0.0, yaw, kind)
                self.styles.append((kind, style))
                if kind in ("table", "cabinet") or (kind == "bookshelf" and style == "low"):
                    top = max(p[0][2] + p[1][2] for p in parts)
                    if top < 1.3:
                        self.tops.append((x - ex * 0.7, y - ey * 0.7, x + ex * 0.7, y + ey * 0.7, top))
                if kind == "table":
                    self.tables.append((x, y, ex, ey))
                return True
        return False

    def _add_parts(self, parts, x, y, z, yaw, cls):
        rng, dom = self.rng, self.dom
        c, s = math.cos(yaw), math.sin(yaw)
        base = _color(rng, dom, cls)
        alt = _color(rng, dom, cls) * rng.uniform(0.6, 1.0)
        label = C[dom.relabel.get(cls, cls)] if cls in C else IGNORE
        ign = _color(rng, dom, "other")
        for (px, py, pz), half, part, dyaw in parts:
            col, lab = (base, label) if part == "main" else (alt, label) if part == "alt" else (ign, IGNORE)
            if part == "book":
                col = np.array(colorsys.hsv_to_rgb(rng.random(), 0.6 * dom.palette.sat_scale, rng.uniform(0.3, 0.8)),
                               dtype=np.float32)
                lab = label
            self.boxes.add((x + c * px - s * py, y + s * px + c * py, z + pz), half, yaw + dyaw, lab, col,
                           rng.uniform(2, 10))

    def _wall_frame(self, side: int, u: float, z: float, depth: float):
        """Room coordinates and the yaw of a point ``u`` along wall ``side``, at height ``z``, ``depth`` metres
        in front of the wall's inner surface (negative: inside the wall)."""
        if side == 0:
            return (u, depth, z), 0.0
        if side == 1:
            return (u, self.ly - depth, z), math.pi
        if side == 2:
            return (depth, u, z), -math.pi / 2
        return (self.lx - depth, u, z), math.pi / 2

    def _wall_box(self, side: int, u: float, z: float, depth: float, half_u: float, half_d: float, half_z: float,
                  yaw: float, label: int, color, texfreq: float) -> None:
        """A box in wall ``side``'s frame: centred ``u`` along the wall, ``depth`` in front of its surface."""
        c, wyaw = self._wall_frame(side, u, z, depth)
        mirrored = side in (1, 2)  # these walls' (u, depth) frames are mirror images of the room's (x, y)
        self.boxes.add(c, (half_u, half_d, half_z), wyaw + (-yaw if mirrored else yaw), label, color, texfreq)

    def _free_opening(self, side: int, u0: float, u1: float) -> bool:
        return all(u1 + 0.1 <= a or u0 - 0.1 >= b for a, b, _, _ in self.openings[side])

    def wall_item(self, cls: str) -> bool:
        """Doors and windows: openings cut into a wall (the wall is built around them by ``finish_walls``),
        framed as in real rooms; boards and pictures: thin boxes standing slightly out of a wall.

        A window is a recess: the glass sits ``recess`` metres behind the wall's surface (real windows sit in
        the wall's depth; glass returns depth only where the sensor's ``glass_depth`` says so), the reveal
        (jambs and head) lines the opening and a sill stands out below it; all of it is labelled window, as
        ScanNet's and S3DIS' annotators label the window's frame with it. A door stands in a doorway: a casing
        a few centimetres proud of the wall around it, and a leaf that is either closed in the doorway or
        open, swung into the room about its hinge, with a handle; all labelled door. The floor in front of a
        door is kept free for the leaf's swing."""
        rng, dom = self.rng, self.dom
        if cls == "door":
            w, h, z0 = rng.uniform(0.42, 0.52), rng.uniform(1.0, 1.07), 0.0
        elif cls == "window":
            w, h, z0 = rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.75), rng.uniform(0.75, 1.0)
        elif cls == "board":  # whiteboard: no shared class (S3DIS' board is outside the benchmark classes)
            w, h, z0 = rng.uniform(0.6, 1.1), rng.uniform(0.45, 0.6), rng.uniform(0.85, 1.0)
        else:  # picture: no shared class
            w, h, z0 = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.3), rng.uniform(1.2, 1.6)
        side = int(rng.integers(4))
        length = self.lx if side < 2 else self.ly
        if length < 2 * w + 0.5:
            return False
        u = rng.uniform(w + 0.2, length - w - 0.2)
        if cls in ("board", "picture"):
            d = 0.015 if cls == "picture" else 0.02
            self._wall_box(side, u, z0 + h, d, w, d, h, 0.0, IGNORE, _color(rng, dom, "other"), rng.uniform(2, 6))
            return True
        if not self._free_opening(side, u - w, u + w):
            return False
        if cls == "door":
            fp = {0: (u - w, 0, u + w, 2 * w), 1: (u - w, self.ly - 2 * w, u + w, self.ly),
                  2: (0, u - w, 2 * w, u + w), 3: (self.lx - 2 * w, u - w, self.lx, u + w)}[side]
            if not self.free(*fp, margin=0.1):
                return False
            self.occupied.append(fp)
            self.openings[side].append((u - w, u + w, 0.0, 2 * h))
            self._door(side, u, w, h)
        else:
            if z0 + 2 * h > self.h - 0.2:
                h = (self.h - 0.2 - z0) / 2
            self.openings[side].append((u - w, u + w, z0, z0 + 2 * h))
            self._window(side, u, w, h, z0)
        return True

    def _window(self, side: int, u: float, w: float, h: float, z0: float) -> None:
        rng, dom = self.rng, self.dom
        lab = C["window"]
        frame = _color(rng, dom, "window_frame")
        glass = _color(rng, dom, "window")
        recess = rng.uniform(0.06, 0.16)
        zc = z0 + h
        c, wyaw = self._wall_frame(side, u, zc, -recess - 0.01)  # the glass, lit by daylight from outside
        self.boxes.add(c, (w, 0.01, h), wyaw, lab, glass, 1.0, emit=self.daylight)
        mullions = int(rng.integers(0, 3))  # glazing bars dividing the glass
        for k in range(mullions):
            self._wall_box(side, u - w + 2 * w * (k + 1) / (mullions + 1), zc, -recess + 0.005, 0.02, 0.025, h,
                           0.0, lab, frame, 3.0)
        ft = 0.03  # reveal lining: jambs and head, from the glass to the wall's surface
        for su in (-1, 1):
            self._wall_box(side, u + su * (w - ft / 2), zc, -recess / 2, ft / 2, recess / 2, h, 0.0, lab, frame, 3.0)
        self._wall_box(side, u, z0 + 2 * h - ft / 2, -recess / 2, w, recess / 2, ft / 2, 0.0, lab, frame, 3.0)
        out = rng.uniform(0.03, 0.07)  # the sill stands out of the wall below the opening
        self._wall_box(side, u, z0 - 0.015, (out - recess) / 2, w + 0.05, (out + recess) / 2, 0.015, 0.0, lab,
                       frame, 3.0)

    def _door(self, side: int, u: float, w: float, h: float) -> None:
        rng, dom = self.rng, self.dom
        lab = C["door"]
        leaf_c = _color(rng, dom, "door")
        casing_c = leaf_c if rng.random() < 0.5 else _color(rng, dom, "window_frame")
        proud, cw = rng.uniform(0.015, 0.03), rng.uniform(0.05, 0.09)  # casing: proud of the wall, width
        for su in (-1, 1):
            self._wall_box(side, u + su * (w + cw / 2), h + cw / 2, proud / 2, cw / 2, proud / 2 + 0.01, h + cw / 2,
                           0.0, lab, casing_c, 3.0)
        self._wall_box(side, u, 2 * h + cw / 2, proud / 2, w + cw, proud / 2 + 0.01, cw / 2, 0.0, lab, casing_c, 3.0)
        for su in (-1, 1):  # the jambs lining the doorway through the wall's depth
            self._wall_box(side, u + su * (w - 0.01), h, -WALL / 2, 0.01, WALL / 2, h, 0.0, lab, casing_c, 3.0)
        self._wall_box(side, u, 2 * h - 0.01, -WALL / 2, w, WALL / 2, 0.01, 0.0, lab, casing_c, 3.0)
        lt = 0.02  # leaf half thickness
        hinge = 1 if rng.random() < 0.5 else -1
        if rng.random() < dom.door_open:  # open: swung into the room about the hinge
            a = rng.uniform(0.35, 1.75)
            lw = w - 0.01
            eu, ed = -hinge * math.cos(a), math.sin(a)  # along the leaf, from the hinge, in the wall's (u, depth)
            nu, nd = math.sin(a), hinge * math.cos(a)  # the leaf's normal
            hu = u + hinge * lw
            cu, cd = hu + eu * lw + nu * lt, ed * lw + abs(nd) * lt + 0.005
            yaw = -hinge * a
            self._wall_box(side, cu, h, cd, lw, lt, h - 0.005, yaw, lab, leaf_c, 4.0)
            for s in (-1, 1):  # handles on both faces, near the free edge
                pu, pd = cu + eu * 0.75 * lw + s * nu * (lt + 0.03), cd + ed * 0.75 * lw + s * nd * (lt + 0.03)
                self._wall_box(side, pu, 1.0, pd, 0.06, 0.03, 0.012, yaw, lab, casing_c * 0.7, 3.0)
        else:  # closed in the doorway, a little behind the wall's surface
            back = rng.uniform(0.02, 0.06)
            self._wall_box(side, u, h, -back - lt, w - 0.01, lt, h - 0.005, 0.0, lab, leaf_c, 4.0)
            self._wall_box(side, u - hinge * 0.8 * w, 1.0, -back + 0.03, 0.06, 0.03, 0.012, 0.0, lab, casing_c * 0.7,
                           3.0)

    def finish_walls(self) -> None:
        """The four walls as boxes, each split around its openings (doors, windows): full-height pieces
        between openings, and pieces below and above each opening."""
        rng, t = self.rng, WALL / 2
        for side in range(4):
            length = self.lx if side < 2 else self.ly
            color = self.wall_color * rng.uniform(0.95, 1.05)
            pieces = []
            cursor = -2 * t  # walls overlap at the corners
            for u0, u1, z0, z1 in sorted(self.openings[side]):
                pieces.append((cursor, u0, 0.0, self.h))
                if z0 > 0:
                    pieces.append((u0, u1, 0.0, z0))
                pieces.append((u0, u1, z1, self.h))
                cursor = u1
            pieces.append((cursor, length + 2 * t, 0.0, self.h))
            for a, b, z0, z1 in pieces:
                if b - a > 1e-3 and z1 - z0 > 1e-3:
                    self._wall_box(side, (a + b) / 2, (z0 + z1) / 2, -t, (b - a) / 2, t, (z1 - z0) / 2, 0.0,
                                   C["wall"], color, 1.0)

    def clutter(self) -> bool:
        rng = self.rng
        style = self._style("clutter")
        (hx, hy), parts = _local_boxes("clutter", style, rng, 1.0)
        if self.tops and style == "small" and rng.random() < 0.8:
            x0, y0, x1, y1, top = self.tops[int(rng.integers(len(self.tops)))]
            if x1 - x0 > 2 * hx and y1 - y0 > 2 * hy:
                x, y = rng.uniform(x0 + hx, x1 - hx), rng.uniform(y0 + hy, y1 - hy)
                self._add_parts(parts, x, y, top, rng.uniform(0, math.pi), "clutter")
                return True
        return self.place("clutter", against_wall=rng.random() < 0.5, tries=8)


def pick_room_type(dom: Domain, rng: np.random.Generator) -> str:
    names = list(ROOM_TYPES)
    w = np.array([float(dom.rooms.get(n, 0.0)) for n in names])
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def build_room(dom: Domain, rng: np.random.Generator) -> _Room:
    """One room of the domain: a room type drawn from its mix, then that type's furniture in the domain's styles."""
    room = _Room(dom, pick_room_type(dom, rng), rng)
    rt = room.type
    n = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in rt.items.items()}
    n["clutter"] = int(round(n.get("clutter", 0) * dom.clutter_scale))
    for k, f in dom.counts.items():  # the domain's own density of a kind: a fractional count rounds at random
        if k in n:
            n[k] = int(math.floor(n[k] * f + rng.random()))
    for _ in range(n.get("door", 0)):
        room.wall_item("door")
    for kind in ("window", "board", "picture"):
        for _ in range(n.get(kind, 0)):
            room.wall_item(kind)
    for kind in ("bed", "sofa", "bookshelf", "cabinet", "fixture", "appliance"):
        for _ in range(n.get(kind, 0)):
            room.place(kind, against_wall=True)
    for _ in range(n.get("table", 0)):
        room.place("table", against_wall=rng.random() < rt.table_wall)
    for _ in range(n.get("chair", 0)):
        at_table = bool(room.tables) and rng.random() < rt.chairs_at_tables
        if not (at_table and room.place("chair", False, tries=10, near_table=True)):
            room.place("chair", against_wall=False)
    for _ in range(n.get("clutter", 0)):
        room.clutter()
    room.finish_walls()
    return room
