"""The synthetic domains as parameter sets: room-type mix, object styles, sensor, lighting, palette.

A :class:`Domain` holds every parameter that makes one domain differ from another, plus a ``seed``.
Scenes are a pure function of (the domain's parameters, split, index, world seed): the parameters are
hashed into each scene's seed (``Domain.key``), so two domains that differ in any parameter share no
scene, and a domain's cache folder changes when any of its parameters does.

Built-in domains (``DOMAINS``) mirror the documented content of the three indoor datasets of the
TTT-KD paper; their room-type mixes are modelled on these sources (see ``bench.data.real_stats``):

* ``synth-s3dis``: S3DIS' 272 rooms by type, counted from the room folder names of S3DIS v1.2
  (``real_stats.S3DIS_ROOMS``): office 156, hallway 61, storage 19, conference room 11, WC 11,
  lobby 3, pantry 3, lounge 3 (plus copy rooms, auditoriums, open space without a counterpart).
  The mix below is those counts renormalised over the harness's room types
  (``real_stats.room_type_shares('s3dis')``), rounded. S3DIS-13 has no cabinet (nor bed) class:
  its annotators put cabinets into clutter, so this domain relabels cabinets as clutter
  (``relabel``) and labels neither cabinet nor bed.
* ``synth-scannet``: ScanNet v2 scans are rooms of apartments, homes, offices and public buildings
  (Dai et al., CVPR 2017: "bedrooms, living rooms, bathrooms, kitchens, offices, ..."); the paper's
  Fig. 5 plots the scene-type histogram but no numeric count was found (``real_stats`` records the
  search). *Assumed* mix, from that description and the figure's order (bedroom/hotel, living
  room/lounge, office, bathroom and kitchen the largest types, conference rooms, hallways,
  storage/closets and lobbies rarer): bedroom 0.22, living room 0.18, office 0.18, bathroom 0.14,
  kitchen 0.12, conference room 0.06, hallway 0.04, storage 0.04, lobby 0.02.
* ``synth-matterport``: Matterport3D scenes (Pointcept) are the regions of 90 whole homes, one
  region per scene, labelled with the region codes of ``real_stats.MATTERPORT_REGION_TYPES``
  (bathroom, bedroom, closet, dining room, kitchen, living room, hallway, entryway, office, ...);
  no region counts were found. *Assumed* mix, from what a home holds room by room (several
  bedrooms and bathrooms per home, one kitchen and living room, hallways and closets between them):
  bedroom 0.24, bathroom 0.20, hallway 0.14, living room 0.14, kitchen 0.10, storage 0.08,
  lobby (entryway) 0.05, office 0.05.
* ``synth-val``: the validation domain for hyper-parameter selection. It shares no parameter set
  (and so no scene) with the three test domains: a mixed building (homes and offices) scanned with a
  sensor between the consumer and the survey one, neutral light and its own palette.

Object styles (``styles``): every furniture class has several shape families (``STYLES``); a
domain draws them with its own probabilities (office swivel and sled-base chairs in S3DIS, dining
and arm chairs in homes), so part of each shift is geometric, which no normalisation removes.

Overrides: ``with_overrides(domain, {"sensor.noise": 0.02, "rooms": {"office": 0.8, "hallway":
0.2}})`` returns a new domain; dotted keys address nested parameters, a nested table replaces a whole
mapping (``rooms``, ``styles.chair``, ``palette.colors.wall``) or sets fields of a group
(``sensor = {noise = 0.02}``). Unknown parameters raise a BenchError listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from bench.cache import stable_hash
from bench.data.classes import CLASS_ID, CLASSES, NUM_CLASSES
from bench.errors import BenchError

C = CLASS_ID
WORLD_VERSION = 5  # bump when the generator or a built-in domain changes: cache keys and scene seeds use it

ROOM_TYPES: tuple[str, ...] = (
    "bedroom", "living_room", "kitchen", "bathroom", "office", "conference_room", "hallway", "storage", "lobby",
)

# The names a domain's parameters refer to (room types above, item kinds, furniture styles) live here, beside
# the domains that weight them; ``room`` builds the geometry of each name and imports them from here.
# every kind of item a room type may hold (a domain's ``counts`` scales them)
ITEM_KINDS: tuple[str, ...] = ("bed", "sofa", "bookshelf", "cabinet", "table", "chair", "door", "window", "clutter",
                               "fixture", "appliance", "board", "picture")

# every furniture class's shape families (the first is the fallback when a domain gives no weight)
STYLES: dict[str, tuple[str, ...]] = {
    "chair": ("four_leg", "sled", "swivel", "armchair", "stool"),
    "table": ("rect", "desk", "round", "pedestal", "coffee", "conference"),
    "sofa": ("one_seat", "two_seat", "three_seat"),
    "bed": ("single", "double", "bare"),
    "cabinet": ("low", "tall", "kitchen", "file"),
    "bookshelf": ("tall", "low", "wide"),
}


@dataclass(frozen=True)
class Sensor:
    """The scanning sensor and its fusion."""

    voxel: float = 0.08  # fusion voxel (metres): the point density of the sensor
    noise: float = 0.006  # depth noise std in metres at 1 m, grows with depth squared
    reg_rot_deg: float = 0.4  # per-frame pose error (rotation std, degrees)
    reg_trans: float = 0.01  # per-frame pose error (translation std, metres)
    hole_rate: float = 0.04  # fraction of scan pixels dropped in blobs
    glass_depth: float = 0.0  # share of window pixels that return depth (frames, dirty glass); 1 = all
    max_range: float = 6.0  # metres
    top: float = 0.0  # if > 0: surfaces above this height (metres) are missed (hand-held scans skip upper walls)
    pitches: tuple[float, ...] = (-0.35, -0.9, 0.25)  # scan pitches (radians) at every yaw stop


@dataclass(frozen=True)
class Light:
    """Lighting: colour temperature, ambient and lamp strength, fall-off and surface texture."""

    kelvin: tuple[float, float] = (4000.0, 6500.0)
    ambient: tuple[float, float] = (0.3, 0.45)
    lamp: tuple[float, float] = (0.6, 0.9)
    falloff: float = 0.2
    texture: float = 0.1
    daylight: tuple[float, float] = (0.8, 1.4)  # brightness of window glass (daylight; > 1 saturates the camera)


@dataclass(frozen=True)
class Palette:
    """Surface colours: per class (hue, hue spread, saturation, value) and a saturation scale."""

    sat_scale: float = 1.0
    colors: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Domain:
    """One domain: every parameter of its scenes. See the module docstring for the built-in ones."""

    name: str
    rooms: dict[str, float]  # room type -> probability
    styles: dict[str, dict[str, float]]  # furniture class -> style -> probability
    sensor: Sensor = Sensor()
    lighting: Light = Light()
    palette: Palette = Palette()
    ceiling: bool = True  # whether rooms have a ceiling (ScanNet reconstructions mostly lack it)
    size_scale: tuple[float, float] = (0.9, 1.1)  # furniture proportions
    room_scale: tuple[float, float] = (0.95, 1.05)  # room floor-plan scale
    clutter_scale: float = 1.0  # multiplies every room type's number of small objects
    door_open: float = 0.5  # probability that a door is open (swung into the room) rather than closed
    counts: dict[str, float] = field(default_factory=dict)  # item kind -> multiplier of its count in every room type
    labels: tuple[str, ...] = CLASSES  # classes this domain labels (others become ignore)
    relabel: dict[str, str] = field(default_factory=dict)  # annotation convention, e.g. S3DIS: cabinet -> clutter
    seed: int = 0  # the domain's own seed: another value gives other scenes of the same parameters

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(C[c] for c in self.labels))

    def params(self) -> dict[str, Any]:
        """Every parameter as plain JSON-able data (the name excluded)."""
        d = dataclasses.asdict(self)
        d.pop("name")
        return json.loads(json.dumps(d))

    @property
    def key(self) -> str:
        """A hash of the parameters and the world version: scene seeds and cache folders use it."""
        return stable_hash({"world": WORLD_VERSION, **self.params()}, 12)


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
    "window": (0.56, 0.06, 0.15, 0.95),  # glass: the daylit sky and outdoors, bright and nearly colourless
    "window_frame": (0.10, 0.05, 0.06, 0.92),  # window frames, reveals, sills and some door casings: painted
    "clutter": (0.00, 0.50, 0.60, 0.70),
    "other": (0.30, 0.50, 0.40, 0.60),
}

# --------------------------------------------------------------------------- the built-in domains
_S3DIS_ROOMS = {"office": 0.58, "hallway": 0.23, "storage": 0.07, "conference_room": 0.04, "bathroom": 0.04,
                "lobby": 0.01, "kitchen": 0.01, "living_room": 0.02}
_SCANNET_ROOMS = {"bedroom": 0.22, "living_room": 0.18, "office": 0.18, "bathroom": 0.14, "kitchen": 0.12,
                  "conference_room": 0.06, "hallway": 0.04, "storage": 0.04, "lobby": 0.02}
_MATTERPORT_ROOMS = {"bedroom": 0.24, "bathroom": 0.20, "hallway": 0.14, "living_room": 0.14, "kitchen": 0.10,
                     "storage": 0.08, "lobby": 0.05, "office": 0.05}
_VAL_ROOMS = {"bedroom": 0.12, "living_room": 0.12, "kitchen": 0.10, "bathroom": 0.10, "office": 0.22,
              "conference_room": 0.10, "hallway": 0.10, "storage": 0.07, "lobby": 0.07}

# Per-domain densities of item kinds (multipliers of the room types' counts), calibrated so that each
# domain's class shares of labelled points approach the real dataset's (``real_stats.shared_class_shares``;
# ``python -m bench world`` prints both and their total-variation distance). Matterport3D's shares are
# unpublished; its homes take ScanNet-20's as a proxy, as ``bench world`` does.
_SCANNET_COUNTS = {"chair": 2.0, "table": 2.0, "sofa": 1.2, "bookshelf": 0.9, "cabinet": 0.6, "door": 0.6,
                   "window": 1.6}
_S3DIS_COUNTS = {"chair": 2.0, "table": 3.0, "sofa": 0.4, "bookshelf": 1.6, "door": 0.9, "window": 3.5, "clutter": 4.0}
_MATTERPORT_COUNTS = {"chair": 2.0, "table": 2.5, "sofa": 1.5, "cabinet": 0.8, "door": 0.7, "window": 1.5}

DOMAINS: dict[str, Domain] = {
    "synth-scannet": Domain(
        name="synth-scannet", rooms=_SCANNET_ROOMS,
        styles={"chair": {"four_leg": 0.35, "swivel": 0.25, "armchair": 0.15, "stool": 0.1, "sled": 0.15},
                "table": {"rect": 0.3, "desk": 0.3, "round": 0.15, "coffee": 0.15, "pedestal": 0.05,
                          "conference": 0.05},
                "sofa": {"one_seat": 0.2, "two_seat": 0.5, "three_seat": 0.3},
                "bed": {"single": 0.45, "double": 0.45, "bare": 0.1},
                "cabinet": {"low": 0.35, "tall": 0.2, "kitchen": 0.3, "file": 0.15},
                "bookshelf": {"tall": 0.4, "low": 0.4, "wide": 0.2}},
        sensor=Sensor(voxel=0.08, noise=0.012, reg_rot_deg=0.8, reg_trans=0.015, hole_rate=0.08, glass_depth=0.6,
                      top=1.7),
        lighting=Light(kelvin=(2700, 3500), ambient=(0.35, 0.5), lamp=(0.5, 0.8), falloff=0.15, texture=0.10),
        palette=Palette(sat_scale=1.0, colors={**_PALETTE_COMMON, "wall": (0.11, 0.06, 0.18, 0.80),
                                               "floor": (0.07, 0.03, 0.55, 0.45),
                                               "chair": (0.02, 0.40, 0.65, 0.55), "sofa": (0.60, 0.20, 0.60, 0.45)}),
        ceiling=False, size_scale=(0.85, 1.05), room_scale=(1.0, 1.2), clutter_scale=1.0, door_open=0.6,
        counts=_SCANNET_COUNTS, labels=tuple(c for c in CLASSES if c != "ceiling"),
    ),
    "synth-s3dis": Domain(
        name="synth-s3dis", rooms=_S3DIS_ROOMS,
        styles={"chair": {"swivel": 0.45, "sled": 0.35, "four_leg": 0.15, "armchair": 0.05},
                "table": {"rect": 0.3, "desk": 0.3, "conference": 0.25, "round": 0.05, "pedestal": 0.1},
                "sofa": {"one_seat": 0.3, "two_seat": 0.5, "three_seat": 0.2},
                "bed": {"single": 1.0},
                "cabinet": {"low": 0.2, "tall": 0.3, "file": 0.4, "kitchen": 0.1},
                "bookshelf": {"tall": 0.5, "wide": 0.35, "low": 0.15}},
        sensor=Sensor(voxel=0.06, noise=0.003, reg_rot_deg=0.0, reg_trans=0.0, hole_rate=0.02, glass_depth=1.0,
                      pitches=(0.6, 0.0, -0.6)),
        lighting=Light(kelvin=(5000, 6500), ambient=(0.55, 0.7), lamp=(0.3, 0.45), falloff=0.05, texture=0.05),
        palette=Palette(sat_scale=0.45, colors={**_PALETTE_COMMON, "wall": (0.60, 0.03, 0.05, 0.70),
                                                "floor": (0.60, 0.03, 0.10, 0.40),
                                                "chair": (0.62, 0.10, 0.25, 0.30), "table": (0.10, 0.02, 0.15, 0.70)}),
        ceiling=True, size_scale=(1.0, 1.2), room_scale=(1.0, 1.15), clutter_scale=4.0, door_open=0.4,
        counts=_S3DIS_COUNTS,
        labels=tuple(c for c in CLASSES if c not in ("bed", "cabinet")), relabel={"cabinet": "clutter"},
    ),
    "synth-matterport": Domain(
        name="synth-matterport", rooms=_MATTERPORT_ROOMS,
        styles={"chair": {"four_leg": 0.5, "armchair": 0.25, "stool": 0.15, "swivel": 0.05, "sled": 0.05},
                "table": {"rect": 0.3, "round": 0.25, "coffee": 0.2, "pedestal": 0.15, "desk": 0.1},
                "sofa": {"one_seat": 0.15, "two_seat": 0.35, "three_seat": 0.5},
                "bed": {"single": 0.25, "double": 0.65, "bare": 0.1},
                "cabinet": {"low": 0.35, "tall": 0.3, "kitchen": 0.3, "file": 0.05},
                "bookshelf": {"tall": 0.3, "low": 0.5, "wide": 0.2}},
        sensor=Sensor(voxel=0.09, noise=0.006, reg_rot_deg=0.4, reg_trans=0.01, hole_rate=0.04, glass_depth=0.5,
                      pitches=(0.6, 0.0, -0.6)),
        lighting=Light(kelvin=(4000, 7000), ambient=(0.25, 0.4), lamp=(0.7, 1.0), falloff=0.35, texture=0.15),
        palette=Palette(sat_scale=1.25, colors={**_PALETTE_COMMON, "wall": (0.30, 0.25, 0.25, 0.75),
                                                "sofa": (0.35, 0.45, 0.55, 0.45),
                                                "bed": (0.85, 0.35, 0.45, 0.75), "cabinet": (0.05, 0.30, 0.55, 0.35)}),
        ceiling=True, size_scale=(0.9, 1.15), room_scale=(0.95, 1.1), clutter_scale=0.8, door_open=0.6,
        counts=_MATTERPORT_COUNTS,
    ),
    "synth-val": Domain(
        name="synth-val", rooms=_VAL_ROOMS,
        styles={"chair": {"four_leg": 0.3, "swivel": 0.3, "sled": 0.15, "armchair": 0.15, "stool": 0.1},
                "table": {"rect": 0.25, "desk": 0.2, "round": 0.15, "pedestal": 0.15, "coffee": 0.1,
                          "conference": 0.15},
                "sofa": {"one_seat": 0.3, "two_seat": 0.4, "three_seat": 0.3},
                "bed": {"single": 0.4, "double": 0.4, "bare": 0.2},
                "cabinet": {"low": 0.3, "tall": 0.25, "kitchen": 0.25, "file": 0.2},
                "bookshelf": {"tall": 0.35, "low": 0.35, "wide": 0.3}},
        sensor=Sensor(voxel=0.07, noise=0.008, reg_rot_deg=0.6, reg_trans=0.008, hole_rate=0.05, glass_depth=0.6),
        lighting=Light(kelvin=(3800, 5200), ambient=(0.4, 0.55), lamp=(0.45, 0.7), falloff=0.25, texture=0.12),
        palette=Palette(sat_scale=0.8, colors={**_PALETTE_COMMON, "wall": (0.45, 0.10, 0.12, 0.78),
                                               "floor": (0.03, 0.05, 0.35, 0.50),
                                               "chair": (0.30, 0.35, 0.45, 0.45), "sofa": (0.15, 0.30, 0.50, 0.50),
                                               "table": (0.55, 0.10, 0.30, 0.50)}),
        ceiling=True, size_scale=(0.9, 1.15), room_scale=(0.95, 1.1), clutter_scale=1.3,
    ),
}
TEST_DOMAINS: tuple[str, ...] = ("synth-scannet", "synth-s3dis", "synth-matterport")  # the benchmark's shifts
VAL_DOMAIN = "synth-val"

DESCRIPTIONS = {
    "synth-scannet": "synthetic ScanNet-like domain: rooms of homes and offices, no ceiling, noisy RGB-D scans",
    "synth-s3dis": "synthetic S3DIS-like domain: offices, hallways, storage and conference rooms, dense clean scans",
    "synth-matterport": "synthetic Matterport3D-like domain: whole homes room by room, rich palettes",
    "synth-val": "synthetic validation domain (hyper-parameter selection): mixed buildings, its own sensor",
}


# --------------------------------------------------------------------------- overrides
def _valid_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        if f.name == "name":
            continue
        v = getattr(obj, f.name)
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(v):
            keys += _valid_keys(v, prefix + f.name + ".")
    return keys


def _coerce(value: Any, current: Any, where: str) -> Any:
    """``value`` converted to the type of ``current`` (TOML lists become tuples), or a BenchError."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise BenchError(f"{where} = {value!r} must be true or false")
        return value
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchError(f"{where} = {value!r} must be a number")
        if isinstance(current, int) and not isinstance(value, int):
            raise BenchError(f"{where} = {value!r} must be a whole number")
        return type(current)(value)
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{where} = {value!r} must be a list like {list(current)!r}")
        if current and all(isinstance(c, (int, float)) for c in current):
            if len(value) != len(current) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in value):
                raise BenchError(f"{where} = {value!r} must be a list of {len(current)} numbers like {list(current)!r}")
            return tuple(float(x) for x in value)
        return tuple(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise BenchError(f"{where} = {value!r} must be a table like {current!r}")
        return dict(value)
    return value


def _set(obj: Any, path: list[str], value: Any, full: str) -> Any:
    name = path[0]
    names = {f.name for f in dataclasses.fields(obj)} - {"name"}
    if name not in names:
        raise KeyError(full)
    current = getattr(obj, name)
    if len(path) == 1:
        if dataclasses.is_dataclass(current) and isinstance(value, dict):  # sensor = {noise = 0.02}
            for k, v in value.items():
                current = _set(current, [k], v, f"{full}.{k}")
            return dataclasses.replace(obj, **{name: current})
        return dataclasses.replace(obj, **{name: _coerce(value, current, full)})
    if dataclasses.is_dataclass(current):
        return dataclasses.replace(obj, **{name: _set(current, path[1:], value, full)})
    if isinstance(current, dict):  # styles.chair = {...}, palette.colors.wall = [...]
        sub = dict(current)
        key = path[1]
        if len(path) > 2:
            raise KeyError(full)
        sub[key] = _coerce(value, current[key], full) if key in current else value
        return dataclasses.replace(obj, **{name: sub})
    raise KeyError(full)


def with_overrides(base: Domain, overrides: dict[str, Any], name: str | None = None) -> Domain:
    """``base`` with the given parameters replaced (dotted keys reach nested ones); checked."""
    dom = dataclasses.replace(base, name=name or base.name)
    for key, value in (overrides or {}).items():
        try:
            dom = _set(dom, key.split("."), value, key)
        except KeyError as e:
            raise BenchError(f"domain '{dom.name}': unknown parameter '{e.args[0]}'; valid parameters: "
                             f"{', '.join(_valid_keys(dom))} (plus rooms.TYPE, styles.CLASS, "
                             f"palette.colors.CLASS)") from None
    check_domain(dom)
    return dom


def check_domain(dom: Domain) -> None:
    """Raise a BenchError for an invalid parameter set (unknown room types, styles, classes, ranges)."""
    where = f"domain '{dom.name}'"
    bad = sorted(set(dom.rooms) - set(ROOM_TYPES))
    if bad:
        raise BenchError(f"{where}: unknown room type(s) {bad} in rooms; valid: {', '.join(ROOM_TYPES)}")
    if any(not isinstance(p, (int, float)) or p < 0 for p in dom.rooms.values()) or sum(dom.rooms.values()) <= 0:
        raise BenchError(f"{where}: rooms = {dom.rooms} must map room types to non-negative weights, not all 0")
    for cls, probs in dom.styles.items():
        if cls not in STYLES:
            raise BenchError(f"{where}: styles.{cls}: no styles for '{cls}'; classes with styles: "
                             f"{', '.join(STYLES)}")
        if not isinstance(probs, dict):
            raise BenchError(f"{where}: styles.{cls} = {probs!r} must be a table style -> weight")
        bad = sorted(set(probs) - set(STYLES[cls]))
        if bad:
            raise BenchError(f"{where}: unknown {cls} style(s) {bad}; valid: {', '.join(STYLES[cls])}")
        if any(not isinstance(p, (int, float)) or p < 0 for p in probs.values()):
            raise BenchError(f"{where}: styles.{cls} = {probs} must have non-negative weights")
    bad = sorted(set(dom.labels) - set(CLASSES))
    if bad:
        raise BenchError(f"{where}: unknown class(es) {bad} in labels; valid: {', '.join(CLASSES)}")
    bad = sorted((set(dom.relabel) | set(dom.relabel.values())) - set(CLASSES))
    if bad:
        raise BenchError(f"{where}: unknown class(es) {bad} in relabel; valid: {', '.join(CLASSES)}")
    bad = sorted(set(dom.palette.colors) - set(CLASSES) - {"other", "window_frame"})
    if bad:
        raise BenchError(f"{where}: palette.colors has unknown class(es) {bad}; valid: {', '.join(CLASSES)}, "
                         "window_frame, other")
    for key, (lo, hi) in (("size_scale", dom.size_scale), ("room_scale", dom.room_scale),
                          ("lighting.kelvin", dom.lighting.kelvin), ("lighting.ambient", dom.lighting.ambient),
                          ("lighting.lamp", dom.lighting.lamp), ("lighting.daylight", dom.lighting.daylight)):
        if not 0 < lo <= hi:
            raise BenchError(f"{where}: {key} = [{lo}, {hi}] must be an increasing pair of positive numbers")
    s = dom.sensor
    if not 0.02 <= s.voxel <= 0.5:
        raise BenchError(f"{where}: sensor.voxel = {s.voxel} must be in [0.02, 0.5] metres")
    for key in ("noise", "reg_rot_deg", "reg_trans", "hole_rate", "top"):
        if getattr(s, key) < 0:
            raise BenchError(f"{where}: sensor.{key} = {getattr(s, key)} must be >= 0")
    if not 0 <= s.hole_rate < 1 or not 0 <= s.glass_depth <= 1:
        raise BenchError(f"{where}: sensor.hole_rate must be in [0, 1) and sensor.glass_depth in [0, 1]")
    bad = sorted(set(dom.counts) - set(ITEM_KINDS))
    if bad:
        raise BenchError(f"{where}: counts has unknown item kind(s) {bad}; valid: {', '.join(ITEM_KINDS)}")
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in dom.counts.values()):
        raise BenchError(f"{where}: counts = {dom.counts} must map item kinds to multipliers >= 0")
    if not 0 <= dom.door_open <= 1:
        raise BenchError(f"{where}: door_open = {dom.door_open} must be a probability in [0, 1]")
    if dom.clutter_scale < 0:
        raise BenchError(f"{where}: clutter_scale = {dom.clutter_scale} must be >= 0")
    assert NUM_CLASSES == len(CLASSES)


def domain_from_spec(spec: dict[str, Any], name: str) -> Domain:
    """A domain from ``{"base": NAME, PARAM: VALUE, ...}`` (a grid's ``[domains.NAME]`` table)."""
    if not isinstance(spec, dict):
        raise BenchError(f"domain '{name}': must be a table with 'base' and parameter overrides, got {spec!r}")
    base = spec.get("base")
    if base not in DOMAINS:
        raise BenchError(f"domain '{name}': base = {base!r} must be one of the built-in domains "
                         f"{', '.join(DOMAINS)}")
    return with_overrides(DOMAINS[base], {k: v for k, v in spec.items() if k != "base"}, name)
