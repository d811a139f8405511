"""Published statistics of ScanNet v2, S3DIS and Matterport3D that the synthetic world is calibrated to.

Only dataset statistics live here (class frequencies, room-type counts, sensor facts), never method
results. Every number carries the source it was read from and what exactly was counted; numbers that
could not be found in a public source are ``None`` and say so - none is estimated or invented here.
Derived numbers (shares computed from published counts or class weights) are computed in this module
from the verbatim source numbers, so the derivation can be checked.

Contents:

* ``CLASS_FREQUENCIES``: per-dataset share of labelled points per raw class, in the dataset's id order
  of ``bench.data.classes.MAPPINGS``; ``shared_class_shares`` maps them onto the harness's 12 shared
  classes and ``tv_to_real`` measures how far a world histogram is from them.
* ``S3DIS_ROOMS``, ``SCANNET_SCENE_TYPES``, ``MATTERPORT_REGION_TYPES``: room-type vocabularies and
  counts; ``room_type_shares`` turns them into a mix over the harness's room types.
* ``SENSORS``: capture hardware, image sizes, depth encodings, noise and scene-size facts.

Known gaps (searched for, not found): Matterport3D per-class point frequencies; ScanNet scene-type
counts; Matterport3D region-type counts; ScanNet and Matterport3D points per scene after Pointcept's
preprocessing. Searched again for world v4 (issue 14: code and web pages, ScanNet paper text and
Matterport3D preprocessing code): still not found. The world therefore uses *assumed* room-type mixes
for its ScanNet- and Matterport3D-like domains (stated with their reasons in
``bench.data.synth.domains``) and compares Matterport3D-like class shares with ScanNet-20's as a proxy
(``bench.world``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bench.data.classes import CLASSES, MAPPINGS
from bench.errors import BenchError

DATASETS: Final[tuple[str, ...]] = ("scannet", "s3dis", "matterport3d")


# ---------------------------------------------------------------------------------------------------
# Class frequencies
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassFrequency:
    """Share of labelled points per raw class of one dataset.

    ``shares`` follows the raw class order of ``bench.data.classes.MAPPINGS[dataset]``; a share is
    ``None`` where no public number was found. Shares are normalised over the dataset's benchmark
    classes only (unlabelled points and points of classes outside the benchmark set are excluded).
    """

    dataset: str
    shares: tuple[tuple[str, float | None], ...]
    counted: str  # what was counted: points/vertices/voxels, which split, which preprocessing
    derivation: str  # how the shares were obtained from the source's numbers
    source: str  # where the numbers come from

    @property
    def complete(self) -> bool:
        return all(s is not None for _, s in self.shares)


# ScanNet-20: mmdetection3d's PointNet++ ScanNet config ships the class weights its converter computed
# on the ScanNet v2 *train* split (1201 scans), one count per vertex of each scan's
# ``_vh_clean_2.ply`` mesh (the same vertices Pointcept's ScanNet ``coord.npy`` holds), unannotated
# vertices (nyu40 id 0) and vertices of nyu40 classes outside the 20 removed, normalised over the 20
# classes, then w = 1 / ln(1.2 + f) (the PointNet++ weighting). Order: ScanNet-20 benchmark order.
SCANNET20_PN2_CLASS_WEIGHTS: Final[tuple[float, ...]] = (
    2.389689, 2.7215734, 4.5944676, 4.8543367, 4.096086, 4.907941,
    4.690836, 4.512031, 4.623311, 4.9242644, 5.358117, 5.360071,
    5.019636, 4.967126, 5.3502126, 5.4023647, 5.4027233, 5.4169416,
    5.3954206, 4.6971426,
)
SCANNET20_PN2_CLASS_WEIGHTS_SOURCE: Final[str] = (
    "open-mmlab/mmdetection3d configs/pointnet2/pointnet2_ssg_2xb16-cosine-200e_scannet-seg.py "
    "(loss_decode.class_weight, 'generated in data pre-processing, saved in "
    "data/scannet/seg_info/train_label_weight.npy'); computed by "
    "tools/data_converter/scannet_data_utils.py ScanNetSegData.get_scene_idxs_and_label_weight "
    "(histogram over the 20 classes + ignore bin, ignore bin dropped, normalised, 1/ln(1.2+f)) on "
    "vertices exported by data/scannet/batch_load_scannet_data.py (all _vh_clean_2.ply vertices, "
    "max_num_point=None)"
)

# S3DIS-13: RandLA-Net's pre-computed number of points per class, counted after the 0.04 m grid
# sub-sampling of its data preparation (the authors' answer in RandLA-Net issue #108: the values come
# from the grid-sampled sub-areas, not the raw points). The source does not say which areas were
# counted; its total (18.61 M points) is of the order of the whole dataset at 4 cm. Grid sub-sampling
# makes the counts closer to surface-area shares than raw point shares. Order: S3DIS-13 order
# (ceiling, floor, wall, beam, column, window, door, table, chair, sofa, bookcase, board, clutter).
S3DIS13_RANDLA_POINT_COUNTS: Final[tuple[int, ...]] = (
    3370714, 2856755, 4919229, 318158, 375640, 478001, 974733,
    650464, 791496, 88727, 1284130, 229758, 2272837,
)
S3DIS13_RANDLA_POINT_COUNTS_SOURCE: Final[str] = (
    "QingyongHu/RandLA-Net helper_tool.py DataProcessing.get_class_weights('S3DIS') num_per_class "
    "(same numbers as the default class_weights of Open3D-ML's S3DIS dataset); counting basis "
    "explained by the author in github.com/QingyongHu/RandLA-Net/issues/108 (grid-sampled "
    "sub-areas, sub_grid_size = 0.04 m in ConfigS3DIS)"
)

# Matterport3D-21: no published per-class point (or vertex, voxel, area) frequency was found for the
# 21 classes (ScanNet-20 + ceiling) of OpenScene's / Pointcept's Matterport3D preprocessing. Searched:
# Pointcept and OpenScene preprocessing and configs, niessner/Matterport tasks (the semantic voxel
# labeling task ships no class histogram), mmdetection3d, GitHub issues. The Matterport3D paper's
# voxel-labelling table may list class shares but its text was not reachable here.
MATTERPORT21_SOURCE: Final[str] = "not found: no public per-class frequency for Matterport3D-21"


def _shares_from_pn2_weights(weights: tuple[float, ...]) -> tuple[float, ...]:
    """Inverts the PointNet++ weighting w = 1 / ln(1.2 + f): f = exp(1 / w) - 1.2."""
    return tuple(math.exp(1.0 / w) - 1.2 for w in weights)


def _shares_from_counts(counts: tuple[int, ...]) -> tuple[float, ...]:
    total = float(sum(counts))
    return tuple(c / total for c in counts)


def _named(dataset: str, values: tuple[float | None, ...]) -> tuple[tuple[str, float | None], ...]:
    names = [raw for raw, _ in MAPPINGS[dataset]]
    if len(names) != len(values):
        raise BenchError(f"real_stats: {dataset} has {len(values)} shares for {len(names)} classes "
                         f"of bench.data.classes.MAPPINGS[{dataset!r}]; fix the table in real_stats.py")
    return tuple(zip(names, values))


CLASS_FREQUENCIES: Final[dict[str, ClassFrequency]] = {
    "scannet": ClassFrequency(
        dataset="scannet",
        shares=_named("scannet", _shares_from_pn2_weights(SCANNET20_PN2_CLASS_WEIGHTS)),
        counted="mesh vertices (_vh_clean_2.ply) of the ScanNet v2 train split (scannetv2_train.txt, "
                "1201 scans), over the "
                "20 benchmark classes (unannotated and non-benchmark vertices excluded)",
        derivation="f = exp(1/w) - 1.2 from the published PointNet++ class weights w; the recovered "
                   "shares sum to 1.0000008, which confirms the inversion",
        source=SCANNET20_PN2_CLASS_WEIGHTS_SOURCE,
    ),
    "s3dis": ClassFrequency(
        dataset="s3dis",
        shares=_named("s3dis", _shares_from_counts(S3DIS13_RANDLA_POINT_COUNTS)),
        counted="points after 0.04 m grid sub-sampling (RandLA-Net preparation); areas counted not "
                "stated by the source (total 18,610,642 points)",
        derivation="count / total count",
        source=S3DIS13_RANDLA_POINT_COUNTS_SOURCE,
    ),
    "matterport3d": ClassFrequency(
        dataset="matterport3d",
        shares=_named("matterport3d", tuple([None] * len(MAPPINGS["matterport3d"]))),
        counted="n/a",
        derivation="n/a",
        source=MATTERPORT21_SOURCE,
    ),
}


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise BenchError(f"real_stats: unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")


def shared_class_shares(dataset: str) -> dict[str, float] | None:
    """The dataset's class frequencies on the harness's shared classes, or ``None`` if unpublished.

    Each raw class's share is added to the shared class it maps to (``bench.data.classes``; e.g.
    ScanNet's desk counts as table). Raw classes that map to ignore (ScanNet's picture, counter,
    curtain, ...; S3DIS's beam, column, board) are dropped, and the rest is renormalised to sum to 1:
    the result is the share of each shared class among the points that are labelled *and* mapped,
    which is what the harness's own labels of that dataset contain. Only the shared classes the
    dataset labels appear as keys (ScanNet has no ceiling or clutter, S3DIS no bed or cabinet);
    a missing key means "not labelled in this dataset", not zero.
    """
    _check_dataset(dataset)
    freq = CLASS_FREQUENCIES[dataset]
    if not freq.complete:
        return None
    sums: dict[str, float] = {}
    for (raw, share), (raw_map, shared) in zip(freq.shares, MAPPINGS[dataset]):
        if raw != raw_map:
            raise BenchError(f"real_stats: {dataset} class {raw!r} does not match "
                             f"bench.data.classes ({raw_map!r}); fix the order in real_stats.py")
        if shared is not None:
            sums[shared] = sums.get(shared, 0.0) + float(share)  # type: ignore[arg-type]
    total = sum(sums.values())
    return {c: sums[c] / total for c in CLASSES if c in sums}


def mapped_fraction(dataset: str) -> float | None:
    """Fraction of the dataset's labelled points whose class maps to a shared class (None if unknown)."""
    _check_dataset(dataset)
    freq = CLASS_FREQUENCIES[dataset]
    if not freq.complete:
        return None
    total = sum(float(s) for _, s in freq.shares)  # type: ignore[arg-type]
    kept = sum(float(s) for (_, s), (_, shared) in zip(freq.shares, MAPPINGS[dataset])  # type: ignore[arg-type]
               if shared is not None)
    return kept / total


def tv_to_real(dataset: str, world_shares: Mapping[str, float]) -> float | None:
    """Total-variation distance between a world class histogram and the real dataset's (None if unknown).

    ``world_shares`` maps shared class names to shares (or counts). It is restricted to the classes
    the real dataset labels and renormalised before comparing, so a world that also labels, say,
    ceiling is compared with ScanNet on ScanNet's classes only. Returns 0.5 * sum |p - q| in [0, 1].
    """
    real = shared_class_shares(dataset)
    if real is None:
        return None
    unknown = sorted(set(world_shares) - set(CLASSES))
    if unknown:
        raise BenchError(f"real_stats.tv_to_real: unknown class names {unknown}; "
                         f"use the shared classes {', '.join(CLASSES)}")
    if any(v < 0 for v in world_shares.values()):
        raise BenchError("real_stats.tv_to_real: world shares must be non-negative")
    kept = {c: float(world_shares.get(c, 0.0)) for c in real}
    total = sum(kept.values())
    if total <= 0:
        raise BenchError(f"real_stats.tv_to_real: the world histogram has no points in {dataset}'s "
                         f"classes ({', '.join(real)}); pass shares of those classes")
    return 0.5 * sum(abs(kept[c] / total - real[c]) for c in real)


# ---------------------------------------------------------------------------------------------------
# Room types
# ---------------------------------------------------------------------------------------------------

# Room types the synthetic world generates (issue 14); used as the target vocabulary below.
HARNESS_ROOM_TYPES: Final[tuple[str, ...]] = (
    "bedroom", "living_room", "kitchen", "bathroom", "office", "conference_room", "hallway",
    "storage", "lobby",
)

# S3DIS rooms per area and type, counted from the 272 room folder names of
# Stanford3dDataset_v1.2_Aligned_Version (Area_N/<type>_<k>), as listed in PointNet's
# sem_seg/meta/anno_paths.txt. 11 types, matching the "11 scene categories" of the 2D-3D-S paper.
S3DIS_ROOMS: Final[dict[str, dict[str, int]]] = {
    "Area_1": {"office": 31, "hallway": 8, "conferenceRoom": 2, "copyRoom": 1, "pantry": 1, "WC": 1},
    "Area_2": {"office": 14, "hallway": 12, "storage": 9, "WC": 2, "auditorium": 2, "conferenceRoom": 1},
    "Area_3": {"office": 10, "hallway": 6, "storage": 2, "WC": 2, "lounge": 2, "conferenceRoom": 1},
    "Area_4": {"office": 22, "hallway": 14, "storage": 4, "WC": 4, "conferenceRoom": 3, "lobby": 2},
    "Area_5": {"office": 42, "hallway": 15, "storage": 4, "conferenceRoom": 3, "WC": 2, "lobby": 1,
               "pantry": 1},
    "Area_6": {"office": 37, "hallway": 6, "conferenceRoom": 1, "copyRoom": 1, "lounge": 1,
               "openspace": 1, "pantry": 1},
}
S3DIS_ROOMS_SOURCE: Final[str] = (
    "room folder names of S3DIS v1.2 (Armeni et al., CVPR 2016), as listed line by line in PointNet's "
    "sem_seg/meta/anno_paths.txt (charlesq34/pointnet; copy read: laomeng0703/S-Pointnet, 272 rooms: "
    "Area_1 44, Area_2 40, Area_3 23, Area_4 49, Area_5 68, Area_6 48; another copy, LebronGG/PointNet, "
    "lacks Area_1/hallway_7, hallway_8 and Area_5/hallway_6); counted by type prefix; Area_1's 44 rooms "
    "also appear in the KPConv-PyTorch preparation log quoted in HuguesTHOMAS/KPConv-PyTorch issue #141"
)
# S3DIS room type -> harness room type (a harness choice, not a published mapping; None = no
# counterpart: the world does not generate that kind of room).
S3DIS_TO_HARNESS_ROOM: Final[dict[str, str | None]] = {
    "office": "office", "conferenceRoom": "conference_room", "hallway": "hallway",
    "storage": "storage", "WC": "bathroom", "lobby": "lobby", "pantry": "kitchen",
    "lounge": "living_room", "copyRoom": None, "auditorium": None, "openspace": None,
}

# ScanNet's per-scan scene types (the ``sceneType`` field of each scan's metadata .txt). Ids follow the
# list order 1..21 (alphabetical, Misc. last), which matches the ids of ScanNet's scene-type benchmark
# (evaluate_scene_type.py: apartment 1, bathroom 2, bedroom/hotel 3, bookstore/library 4,
# conference room 8, copy/mail room 9, hallway 13, kitchen 14, laundry room 15, living room/lounge 16,
# office 18, storage/basement/garage 20, misc 21 are the 13 evaluated types).
SCANNET_SCENE_TYPES: Final[tuple[str, ...]] = (
    "Apartment", "Bathroom", "Bedroom / Hotel", "Bookstore / Library", "Classroom", "Closet",
    "ComputerCluster", "Conference Room", "Copy/Mail Room", "Dining Room", "Game room", "Gym",
    "Hallway", "Kitchen", "Laundry Room", "Living room / Lounge", "Lobby", "Office", "Stairs",
    "Storage/Basement/Garage", "Misc.",
)
SCANNET_BENCHMARK_SCENE_TYPES: Final[tuple[str, ...]] = (
    "Apartment", "Bathroom", "Bedroom / Hotel", "Bookstore / Library", "Conference Room",
    "Copy/Mail Room", "Hallway", "Kitchen", "Laundry Room", "Living room / Lounge", "Office",
    "Storage/Basement/Garage", "Misc.",
)
# Counts per scene type: not found. The ScanNet paper's Fig. 5 plots them (ScanNet issue #135) but no
# numeric listing or per-scan type file was found in public code; they are derivable only from the
# dataset's own scan metadata (test scans carry no type, ScanNet issue #162).
SCANNET_SCENE_TYPE_COUNTS: Final[dict[str, int] | None] = None
SCANNET_SCENE_TYPES_SOURCE: Final[str] = (
    "sceneType field: ScanNet ScannerApp data formats (scan-net.org/ScanNet/ScannerApp, example "
    "'sceneType = Bedroom / Hotel'); the 21-type list as enumerated in ScanNet-based training code "
    "and consistent with the ids of ScanNet's evaluate_scene_type.py; counts not found"
)
SCANNET_TO_HARNESS_ROOM: Final[dict[str, str | None]] = {
    "Apartment": None, "Bathroom": "bathroom", "Bedroom / Hotel": "bedroom",
    "Bookstore / Library": None, "Classroom": None, "Closet": "storage", "ComputerCluster": None,
    "Conference Room": "conference_room", "Copy/Mail Room": None, "Dining Room": None,
    "Game room": None, "Gym": None, "Hallway": "hallway", "Kitchen": "kitchen",
    "Laundry Room": None, "Living room / Lounge": "living_room", "Lobby": "lobby", "Office": "office",
    "Stairs": None, "Storage/Basement/Garage": "storage", "Misc.": None,
}

# Matterport3D region label codes of the .house files (niessner/Matterport data_organization.md).
# Pointcept's Matterport3D scenes are these regions (one scene per region_segmentations/regionK.ply),
# so each scene has exactly one of these labels.
MATTERPORT_REGION_TYPES: Final[dict[str, str]] = {
    "a": "bathroom", "b": "bedroom", "c": "closet", "d": "dining room", "e": "entryway/foyer/lobby",
    "f": "familyroom", "g": "garage", "h": "hallway", "i": "library", "j": "laundryroom/mudroom",
    "k": "kitchen", "l": "living room", "m": "meetingroom/conferenceroom", "n": "lounge",
    "o": "office", "p": "porch/terrace/deck/driveway", "r": "rec/game", "s": "stairs",
    "t": "toilet", "u": "utilityroom/toolroom", "v": "tv", "w": "workout/gym/exercise",
    "x": "outdoor", "y": "balcony", "z": "other room", "B": "bar", "C": "classroom",
    "D": "dining booth", "S": "spa/sauna", "Z": "junk", "-": "no label",
}
# Region counts per label: not found (derivable only from the 90 .house files of the dataset).
MATTERPORT_REGION_TYPE_COUNTS: Final[dict[str, int] | None] = None
MATTERPORT_REGION_TYPES_SOURCE: Final[str] = (
    "niessner/Matterport data_organization.md, house_segmentations: 'The label of each region is a "
    "string with the following conventions'; counts not found"
)
MATTERPORT_TO_HARNESS_ROOM: Final[dict[str, str | None]] = {
    "a": "bathroom", "t": "bathroom", "b": "bedroom", "c": "storage", "u": "storage",
    "g": "storage", "k": "kitchen", "l": "living_room", "f": "living_room", "n": "living_room",
    "o": "office", "m": "conference_room", "h": "hallway", "e": "lobby",
}  # codes not listed have no harness counterpart

ROOM_TYPE_COUNTS: Final[dict[str, dict[str, int] | None]] = {
    "s3dis": {t: sum(a.get(t, 0) for a in S3DIS_ROOMS.values())
              for t in sorted({t for a in S3DIS_ROOMS.values() for t in a})},
    "scannet": SCANNET_SCENE_TYPE_COUNTS,
    "matterport3d": MATTERPORT_REGION_TYPE_COUNTS,
}
_TO_HARNESS_ROOM: Final[dict[str, Mapping[str, str | None]]] = {
    "s3dis": S3DIS_TO_HARNESS_ROOM,
    "scannet": SCANNET_TO_HARNESS_ROOM,
    "matterport3d": MATTERPORT_TO_HARNESS_ROOM,
}


def room_type_shares(dataset: str) -> dict[str, float] | None:
    """The dataset's room-type mix on ``HARNESS_ROOM_TYPES`` (None where counts are unpublished).

    Rooms of types without a harness counterpart (S3DIS copy rooms, auditoriums, open space) are
    dropped and the rest renormalised; harness types the dataset lacks are absent from the result.
    """
    _check_dataset(dataset)
    counts = ROOM_TYPE_COUNTS[dataset]
    if counts is None:
        return None
    mapping = _TO_HARNESS_ROOM[dataset]
    sums: dict[str, int] = {}
    for raw, n in counts.items():
        target = mapping.get(raw)
        if target is not None:
            sums[target] = sums.get(target, 0) + n
    total = sum(sums.values())
    return {t: sums[t] / total for t in HARNESS_ROOM_TYPES if t in sums}


# ---------------------------------------------------------------------------------------------------
# Sensors and scene sizes
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorFacts:
    """Capture hardware and data-format facts of one dataset (None = not found in a public source)."""

    dataset: str
    device: str
    color_size: tuple[int, int] | None  # (width, height) in pixels
    depth_size: tuple[int, int] | None  # (width, height) in pixels
    color_focal_px: float | None  # fx = fy of the colour camera (example scan), pixels
    depth_focal_px: float | None  # fx = fy of the depth camera (example scan), pixels
    depth_unit_m: float | None  # metres per depth-image integer unit
    views: str  # how views are taken / how many
    depth_noise: str  # what is known about depth noise
    scene_unit: str  # what one scene of Pointcept's preprocessing is
    points_per_scene: str  # what is known about points per scene
    source: str


# Random depth error of PrimeSense-type structured-light sensors (Kinect v1; the Structure Sensor and
# the Matterport Pro's Carmine sensors use the same technology): Khoshelham (ISPRS 2011) "the random
# error of depth measurement increases with increasing distance to the sensor, and ranges from a few
# millimetres up to about 4 cm at the maximum range of the sensor" (5 m). Fitting sigma = k z^2 through
# 4 cm at 5 m gives k = 0.0016 m^-1 (1.6 mm at 1 m, 6.4 mm at 2 m, 14 mm at 3 m); the quadratic law
# is the paper's theoretical model, the coefficient is derived here from the abstract's two numbers.
STRUCTURED_LIGHT_NOISE_K_PER_M: Final[float] = 0.04 / 5.0**2
STRUCTURED_LIGHT_NOISE_SOURCE: Final[str] = (
    "K. Khoshelham, 'Accuracy analysis of Kinect depth data', ISPRS Archives XXXVIII-5/W12, 2011 "
    "(abstract: random error from a few mm up to about 4 cm at the maximum range); k derived as "
    "0.04 m / (5 m)^2 assuming sigma = k z^2"
)

SENSORS: Final[dict[str, SensorFacts]] = {
    "scannet": SensorFacts(
        dataset="scannet",
        device="Occipital Structure Sensor (structured-light depth) on an iPad Air 2 (colour camera)",
        color_size=(1296, 968),
        depth_size=(640, 480),
        color_focal_px=1170.187988,
        depth_focal_px=571.623718,
        depth_unit_m=0.001,
        views="RGB-D video, colour and depth frames in lockstep (example scan: 1912 frames); "
              "2.5 M views in 1513 scans (about 1650 frames per scan on average, derived)",
        depth_noise="structured light; sigma ~ k z^2 with k ~ STRUCTURED_LIGHT_NOISE_K_PER_M "
                    "(PrimeSense-type sensor, see STRUCTURED_LIGHT_NOISE_SOURCE); no ScanNet-specific "
                    "noise figure found",
        scene_unit="one scan (scene%04d_%02d); coord = vertices of _vh_clean_2.ply",
        points_per_scene="not found (no public statistic of _vh_clean_2.ply vertex counts)",
        source="ScanNet ScannerApp data formats (scan-net.org/ScanNet/ScannerApp: colorWidth 1296, "
               "colorHeight 968, depthWidth 640, depthHeight 480, fx_color 1170.187988, "
               "fx_depth 571.623718, numDepthFrames 1912 in the example); ScanNet README and paper "
               "abstract (2.5 M views, 1513 scans); depth PNG in millimetres as exported by SensReader",
    ),
    "s3dis": SensorFacts(
        dataset="s3dis",
        device="Matterport camera (tripod panorama scanner); 2D-3D-S images are rendered from the "
               "textured mesh it produced",
        color_size=(1080, 1080),
        depth_size=(1080, 1080),
        color_focal_px=None,
        depth_focal_px=None,
        depth_unit_m=1.0 / 512.0,
        views="2D-3D-S: over 70,000 RGB images sampled densely per scan location plus one "
              "equirectangular panorama per location; per-image camera K in the pose JSON",
        depth_noise="not published; the point clouds come from Matterport's reconstruction "
                    "(same PrimeSense-type sensors as Matterport3D), the 2D-3D-S depth is rendered "
                    "(16-bit PNG, max 128 m, 65535 = missing)",
        scene_unit="one room (Area_N/<type>_<k>), 272 rooms in 6 areas of 3 buildings, over 6,000 m^2",
        points_per_scene="273 M points in total -> about 1.0 M raw points per room on average "
                         "(derived: 273e6 / 272); Pointcept keeps the raw points",
        source="alexsax/2D-3D-Semantics README (1080x1080, depth 1/512 m, max 128 m, 65535 missing, "
               "over 70,000 RGB images, 6 areas / 3 buildings / over 6,000 m^2); PointNet sem_seg "
               "README ('3D scans from Matterport scanners in 6 areas'); KPConv-style S3DIS READMEs "
               "('6 large-scale indoor areas, 3 buildings, 273 million points')",
    ),
    "matterport3d": SensorFacts(
        dataset="matterport3d",
        device="Matterport Pro camera: three PrimeSense Carmine RGB-D sensors on an eye-height tripod "
               "(pointing diagonally up, flat, diagonally down)",
        color_size=(1280, 1024),
        depth_size=(1280, 1024),
        color_focal_px=None,
        depth_focal_px=None,
        depth_unit_m=0.00025,
        views="the camera rotates to 6 yaw stops 60 degrees apart: 3 x 6 = 18 images per panorama "
              "(tripod placement); 10,800 panoramas (x 18 = 194,400 RGB-D images) in 90 buildings "
              "(benchmark split 61 train / 11 val / 18 test buildings)",
        depth_noise="structured light (Carmine); sigma ~ k z^2 as for ScanNet (see "
                    "STRUCTURED_LIGHT_NOISE_SOURCE); no Matterport-specific figure found",
        scene_unit="one region of a house (Pointcept: region_segmentations/regionK.ply, "
                   "coord = mesh vertices, label = majority of adjacent faces' categories)",
        points_per_scene="not found",
        source="niessner/Matterport data_organization.md (Matterport Pro = three Primesense Carmine "
               "sensors, 18 images per panorama, depth 0.25 mm per unit); vsislab/Matterport3D-Layout "
               "README ('All the images have the resolution of 1024x1280'); niessner/Matterport "
               "tasks/benchmark/scenes_{train,val,test}.txt (61/11/18); Matterport3D 360 RGBD README "
               "(researchdata.bath.ac.uk/1126: 10,800 skybox images); Pointcept "
               "preprocess_matterport3d_mesh.py",
    ),
}
