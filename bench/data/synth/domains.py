"""The three synthetic domains: room sizes, furniture counts, palettes, lighting and sensor of each.

A domain mirrors the character of one real indoor dataset (see ``bench.data.synth``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.data.classes import CLASS_ID, NUM_CLASSES

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
