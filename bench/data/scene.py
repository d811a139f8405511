"""The one scene format: in-memory ``Scene``/``View`` and the on-disk per-scene folder layout.

On disk (Pointcept's layout plus paired views)::

    SCENE/coord.npy        (N,3) float32, metres
    SCENE/color.npy        (N,3) uint8
    SCENE/normal.npy       (N,3) float32, optional
    SCENE/<label file>     (N,) or (N,1) integer, -1 = ignore (segment.npy; ScanNet: segment20.npy)
    SCENE/views/intrinsic.txt        3x3 (or 4x4) pinhole intrinsic of the colour images
    SCENE/views/NNNNN.png|jpg        colour image
    SCENE/views/NNNNN_depth.png      uint16 depth in millimetres, 0 = no depth
    SCENE/views/NNNNN_pose.txt       4x4 camera-to-world
    SCENE/views/NNNNN_label.png      optional uint8 label map (255 = ignore), synthetic data only

    SCENE/checksums.sha256           sha256 of every other file of the folder (``sha256sum`` format)

Depth maps may have another resolution than the colour image (as in ScanNet); the reader rescales
them to the image size by nearest-neighbour sampling so that one intrinsic serves both.

``write_scene`` writes ``checksums.sha256`` last, inside the temporary folder that is renamed into
place, so a scene folder with a matching checksum file is complete and unaltered
(``verify_checksums``; ``sha256sum -c checksums.sha256`` inside the folder checks the same). The check
knows nothing of the files' meaning: any file added, removed or changed fails it. Generated datasets
verify it on every read and regenerate a scene that fails; real data may come without the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass
class View:
    image: np.ndarray  # (H,W,3) uint8
    depth: np.ndarray  # (H,W) float32 metres, 0 = no depth
    intrinsic: np.ndarray  # (3,3) float32
    cam_to_world: np.ndarray  # (4,4) float32
    label: np.ndarray | None = None  # (H,W) int64, -1 = ignore (synthetic views only)

    def validate(self, where: str) -> None:
        h, w = self.image.shape[:2]
        _check(self.image.ndim == 3 and self.image.shape[2] == 3 and self.image.dtype == np.uint8,
               where, f"image must be (H,W,3) uint8, got {self.image.shape} {self.image.dtype}")
        _check(self.depth.shape == (h, w), where, f"depth shape {self.depth.shape} != image {(h, w)}")
        _check(bool(np.isfinite(self.depth).all()) and bool((self.depth >= 0).all()), where,
               "depth has negative or non-finite values")
        _check(self.intrinsic.shape == (3, 3) and bool(np.isfinite(self.intrinsic).all()), where,
               f"intrinsic must be a finite 3x3 matrix, got shape {self.intrinsic.shape}")
        _check(self.cam_to_world.shape == (4, 4) and bool(np.isfinite(self.cam_to_world).all()), where,
               "pose must be a finite 4x4 camera-to-world matrix")
        if self.label is not None:
            _check(self.label.shape == (h, w), where, f"label map shape {self.label.shape} != {(h, w)}")


@dataclass
class Scene:
    name: str
    dataset: str
    coord: np.ndarray  # (N,3) float32
    color: np.ndarray  # (N,3) float32 in [0,1]
    label: np.ndarray  # (N,) int64, -1 = ignore
    normal: np.ndarray | None = None  # (N,3) float32
    views: list[View] = field(default_factory=list)
    # what the reader measured about this scene (real data: depth_agreement, color_consistency, views,
    # frames_skipped, labelled); copied into the scene's result rows
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(self.coord.shape[0])

    def validate(self, where: str | None = None, num_classes: int | None = None) -> Scene:
        where = where or f"scene {self.dataset}/{self.name}"
        n = self.coord.shape[0] if self.coord.ndim == 2 else -1
        _check(self.coord.ndim == 2 and self.coord.shape[1] == 3, where,
               f"coord must be (N,3), got {self.coord.shape}")
        _check(n > 0, where, "scene has no points")
        _check(self.coord.dtype == np.float32, where, f"coord must be float32, got {self.coord.dtype}")
        _check(bool(np.isfinite(self.coord).all()), where,
               f"coord has {int((~np.isfinite(self.coord)).any(1).sum())} non-finite points")
        _check(self.color.shape == (n, 3), where, f"color shape {self.color.shape} != ({n}, 3)")
        _check(self.color.dtype == np.float32 and bool(np.isfinite(self.color).all()), where,
               "color must be finite float32")
        _check(float(self.color.min()) >= 0.0 and float(self.color.max()) <= 1.0, where,
               "color must lie in [0,1]")
        _check(self.label.shape == (n,), where, f"label shape {self.label.shape} != ({n},)")
        _check(self.label.dtype == np.int64, where, f"label must be int64, got {self.label.dtype}")
        if num_classes is not None and n:
            bad = (self.label < -1) | (self.label >= num_classes)
            if bad.any():
                _check(False, where, f"{int(bad.sum())} labels outside [-1, {num_classes - 1}] "
                       f"(e.g. {int(self.label[bad][0])})")
        if self.normal is not None:
            _check(self.normal.shape == (n, 3) and bool(np.isfinite(self.normal).all()), where,
                   f"normal must be finite (N,3), got {self.normal.shape}")
        for i, v in enumerate(self.views):
            v.validate(f"{where} view {i}")
        return self


def _check(ok: bool, where, msg: str) -> None:
    if not ok:
        raise BenchError(f"{where}: {msg}. Fix or regenerate the scene.")


# --------------------------------------------------------------------------------------- checksums
CHECKSUMS = "checksums.sha256"


def folder_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative POSIX path -> hex digest), but the checksum file."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != CHECKSUMS:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[p.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def write_checksums(folder: Path) -> Path:
    """Write ``folder/checksums.sha256`` for the files there now (``sha256sum`` format)."""
    lines = "".join(f"{h}  {rel}\n" for rel, h in folder_checksums(folder).items())
    path = Path(folder) / CHECKSUMS
    path.write_text(lines)
    return path


def verify_checksums(folder: Path) -> str | None:
    """None if ``folder`` holds exactly the files its checksum file lists, each with its checksum; else
    what is wrong, naming the first file (a missing folder or checksum file counts as wrong)."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder}: missing"
    listed: dict[str, str] = {}
    try:
        for line in (folder / CHECKSUMS).read_text().splitlines():
            h, _, rel = line.partition("  ")
            if len(h) != 64 or not rel:
                return f"{folder / CHECKSUMS}: malformed line {line[:80]!r}"
            listed[rel] = h
    except FileNotFoundError:
        return f"{folder / CHECKSUMS}: missing (an incomplete scene, or one written before scenes carried checksums)"
    except (OSError, UnicodeDecodeError) as e:
        return f"{folder / CHECKSUMS}: unreadable ({e})"
    actual = folder_checksums(folder)
    for rel, h in listed.items():
        if rel not in actual:
            return f"{folder / rel}: missing"
        if actual[rel] != h:
            return f"{folder / rel}: content differs from its checksum (damaged or altered)"
    extra = sorted(set(actual) - set(listed))
    if extra:
        return f"{folder / extra[0]}: not listed in {CHECKSUMS} (a file added to the scene)"
    return None


# ------------------------------------------------------------------------------------------- writer
def write_scene(scene: Scene, folder: Path, label_file: str = "segment.npy") -> Path:
    """Write ``scene`` to ``folder`` atomically (a temporary folder renamed into place), its checksum
    file last."""
    scene.validate()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "coord.npy", scene.coord.astype(np.float32))
        np.save(tmp / "color.npy", np.clip(np.round(scene.color * 255.0), 0, 255).astype(np.uint8))
        if scene.normal is not None:
            np.save(tmp / "normal.npy", scene.normal.astype(np.float32))
        np.save(tmp / label_file, scene.label.astype(np.int16))
        if scene.views:
            vdir = tmp / "views"
            vdir.mkdir()
            np.savetxt(vdir / "intrinsic.txt", scene.views[0].intrinsic, fmt="%.6f")
            for i, v in enumerate(scene.views):
                if not np.allclose(v.intrinsic, scene.views[0].intrinsic):
                    raise BenchError(f"scene {scene.name}: all views of a scene must share one intrinsic")
                Image.fromarray(v.image).save(vdir / f"{i:05d}.png")
                mm = np.clip(np.round(v.depth * 1000.0), 0, 65535).astype(np.uint16)
                Image.fromarray(mm).save(vdir / f"{i:05d}_depth.png")
                np.savetxt(vdir / f"{i:05d}_pose.txt", v.cam_to_world, fmt="%.6f")
                if v.label is not None:
                    lab = np.where(v.label < 0, 255, v.label).astype(np.uint8)
                    Image.fromarray(lab).save(vdir / f"{i:05d}_label.png")
        write_checksums(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ------------------------------------------------------------------------------------------- reader
def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BenchError(f"{path}: file missing; check the data root, or export the scene again (a scene folder "
                         "holds coord.npy, color.npy, the label file and optionally normal.npy)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises many types for corrupt files
        raise BenchError(f"{path}: cannot read as .npy ({e}); the file is truncated or not a numpy array: export "
                         "the scene again") from e


def read_points(folder: Path, label_file: str = "segment.npy", label_map: np.ndarray | None = None):
    """Read coord/color/normal/labels of one scene folder; labels mapped through ``label_map``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: scene folder not found. Check the data root and split list.")
    coord = _load_npy(folder / "coord.npy")
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise BenchError(f"{folder / 'coord.npy'}: expected shape (N,3), got {coord.shape}; export the scene "
                         "again with one x,y,z row per point")
    if coord.shape[0] == 0:
        raise BenchError(f"{folder / 'coord.npy'}: scene has no points; export it again or leave it out of the "
                         "split (splits/SPLIT.txt)")
    if not np.isfinite(coord).all():
        raise BenchError(f"{folder / 'coord.npy'}: {int((~np.isfinite(coord)).any(1).sum())} points have "
                         "NaN/inf coordinates; clean the export")
    n = coord.shape[0]
    color = _load_npy(folder / "color.npy")
    if color.shape != (n, 3):
        raise BenchError(f"{folder / 'color.npy'}: expected shape ({n}, 3), got {color.shape}; export the scene "
                         "again with one RGB row per point")
    color = color.astype(np.float32) / (255.0 if color.dtype == np.uint8 or color.max() > 1.0 else 1.0)
    normal = None
    if (folder / "normal.npy").is_file():
        normal = _load_npy(folder / "normal.npy").astype(np.float32)
        if normal.shape != (n, 3):
            raise BenchError(f"{folder / 'normal.npy'}: expected shape ({n}, 3), got {normal.shape}; export the "
                             "scene again, or delete normal.npy and set features = [\"color\"]")
    label = _load_npy(folder / label_file)
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.shape != (n,):
        raise BenchError(f"{folder / label_file}: expected {n} labels, got shape {label.shape}; export the scene "
                         "again with one label per point")
    if not np.issubdtype(label.dtype, np.integer):
        raise BenchError(f"{folder / label_file}: labels must be integers, got {label.dtype}; save them as int16 "
                         "class ids (-1 = ignore)")
    label = label.astype(np.int64)
    if label_map is not None:
        bad = (label < -1) | (label >= len(label_map))
        if bad.any():
            raise BenchError(f"{folder / label_file}: {int(bad.sum())} labels outside [-1, {len(label_map) - 1}] "
                             f"(e.g. {int(label[bad][0])}); is this the right dataset/label file?")
        label = np.where(label < 0, -1, label_map[np.clip(label, 0, None)])
    if (label < 0).all():
        log.warning("%s: every point is labelled ignore%s, so this scene scores nothing; check the label file "
                    "and the dataset's class mapping (`bench list`)", folder / label_file,
                    "" if label_map is None else " after mapping to the shared classes")
    return coord.astype(np.float32), color, normal, label


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"{path}: cannot read image ({e})") from e


def read_depth(path: Path, size: tuple[int, int] | None = None, scale: float = 1000.0) -> np.ndarray:
    """A uint16 depth PNG in millimetres as float32 metres, resized (nearest) to ``size`` = (H, W)."""
    try:
        with Image.open(path) as im:
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.NEAREST)
            d = np.asarray(im, dtype=np.float32) / scale
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"{path}: cannot read depth image ({e})") from e
    return d


def read_matrix(path: Path, shape=(4, 4)) -> np.ndarray:
    if not path.is_file():
        raise BenchError(f"{path}: file missing")
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"{path}: cannot parse matrix ({e})") from e
    if shape == (3, 3) and m.shape == (4, 4):
        m = m[:3, :3]
    if m.shape != shape:
        raise BenchError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m.astype(np.float32)


NON_FINITE_POSE = "non-finite (inf/NaN) pose"


class FrameSkips:
    """The frames a reader skipped, by reason, naming the first files of each reason.

    Readers never stop on one bad frame: they call ``skip`` and go on, then ``report`` logs one line
    (a warning when something other than a non-finite pose was skipped: those are normal in ScanNet)
    and ``check_any`` raises a BenchError naming the folder and the first bad files when no frame at
    all was usable.
    """

    def __init__(self, where: str | Path):
        self.where = str(where)
        self.reasons: dict[str, list[str]] = {}

    def skip(self, path: str | Path, reason: str, detail: object = None) -> None:
        text = str(detail or "").removeprefix(f"{path}: ")  # BenchErrors start with the file they name
        self.reasons.setdefault(reason, []).append(f"{path}" + (f" ({text})" if text else ""))

    def pose(self, path: Path) -> np.ndarray | None:
        """A camera-to-world pose file read as a finite 4x4 matrix, or None (skipped and counted)."""
        try:
            pose = read_matrix(path)
        except BenchError as e:
            self.skip(path, "unreadable pose", e)
            return None
        if not np.isfinite(pose).all():
            self.skip(path, NON_FINITE_POSE)
            return None
        return pose

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.reasons.values())

    def summary(self, per_reason: int = 2) -> str:
        parts = []
        for reason, files in self.reasons.items():
            more = f", +{len(files) - per_reason} more" if len(files) > per_reason else ""
            parts.append(f"{len(files)} {reason}: {'; '.join(files[:per_reason])}{more}")
        return " | ".join(parts)

    def report(self, total: int, kind: str = "frames") -> None:
        if not self.count:
            return
        level = logging.INFO if set(self.reasons) == {NON_FINITE_POSE} else logging.WARNING
        log.log(level, "%s: skipped %d of %d %s (%s)", self.where, self.count, total, kind, self.summary())

    def check_any(self, usable: int, total: int, kind: str = "frames") -> None:
        if total and not usable:
            raise BenchError(f"{self.where}: none of the {total} {kind} is usable ({self.summary(3)}); "
                             "re-export them or remove the folder")


def read_views(vdir: Path, skips: FrameSkips | None = None) -> list[View]:
    """Read the ``views/`` folder of the scene layout. A view whose pose or depth is missing,
    unreadable or non-finite, or whose image cannot be read, is skipped and counted in ``skips``
    (logged); ``intrinsic.txt`` missing, or no usable view at all, raises a BenchError."""
    if not vdir.is_dir():
        return []
    skips = skips if skips is not None else FrameSkips(vdir)
    intrinsic = read_matrix(vdir / "intrinsic.txt", (3, 3))
    stems = sorted(p.stem for p in vdir.iterdir() if p.suffix in (".png", ".jpg") and p.stem.isdigit())
    views = []
    for s in stems:
        img_path = vdir / f"{s}.png" if (vdir / f"{s}.png").is_file() else vdir / f"{s}.jpg"
        pose_path, depth_path = vdir / f"{s}_pose.txt", vdir / f"{s}_depth.png"
        if not pose_path.is_file():
            skips.skip(pose_path, "pose missing")
            continue
        if not depth_path.is_file():
            skips.skip(depth_path, "depth missing")
            continue
        pose = skips.pose(pose_path)
        if pose is None:
            continue
        try:
            image = read_image(img_path)
            depth = read_depth(depth_path, image.shape[:2])
        except BenchError as e:
            skips.skip(img_path, "unreadable image or depth", e)
            continue
        label = None
        lab_path = vdir / f"{s}_label.png"
        if lab_path.is_file():
            try:
                with Image.open(lab_path) as im:
                    lab = np.asarray(im, dtype=np.int64)
            except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
                skips.skip(lab_path, "unreadable label map", e)
                continue
            label = np.where(lab == 255, -1, lab)
        views.append(View(image, depth, intrinsic, pose, label))
    skips.report(len(stems), "views")
    skips.check_any(len(views), len(stems), "views")
    return views


def read_scene(folder: Path, dataset: str, label_file: str = "segment.npy", label_map=None,
               num_classes: int | None = None, with_views: bool = True) -> Scene:
    folder = Path(folder)
    coord, color, normal, label = read_points(folder, label_file, label_map)
    views = read_views(folder / "views") if with_views else []
    return Scene(folder.name, dataset, coord, color, label, normal, views).validate(str(folder), num_classes)
