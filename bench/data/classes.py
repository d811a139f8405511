"""The benchmark's shared class list and each dataset's mapping onto it.

Every dataset maps its own label ids to the shared ids below; ids that have no shared class become
``IGNORE`` (-1). Cross-dataset pairs are scored on the classes both datasets label (see
``eval_classes``), the convention of the published ScanNet<->S3DIS common subset.
"""

from __future__ import annotations

import numpy as np

IGNORE = -1

CLASSES: tuple[str, ...] = (
    "wall",
    "floor",
    "ceiling",
    "chair",
    "table",
    "sofa",
    "bed",
    "cabinet",
    "bookshelf",
    "door",
    "window",
    "clutter",
)
NUM_CLASSES = len(CLASSES)
CLASS_ID = {c: i for i, c in enumerate(CLASSES)}

# Pointcept's ScanNet-20 ids (segment20.npy) -> shared class (None = ignore). desk counts as table.
SCANNET20 = (
    ("wall", "wall"), ("floor", "floor"), ("cabinet", "cabinet"), ("bed", "bed"), ("chair", "chair"),
    ("sofa", "sofa"), ("table", "table"), ("door", "door"), ("window", "window"),
    ("bookshelf", "bookshelf"), ("picture", None), ("counter", None), ("desk", "table"),
    ("curtain", None), ("refrigerator", None), ("shower curtain", None), ("toilet", None),
    ("sink", None), ("bathtub", None), ("otherfurniture", None),
)
# Pointcept's S3DIS-13 ids (segment.npy). beam/column/board have no shared class.
S3DIS13 = (
    ("ceiling", "ceiling"), ("floor", "floor"), ("wall", "wall"), ("beam", None), ("column", None),
    ("window", "window"), ("door", "door"), ("table", "table"), ("chair", "chair"), ("sofa", "sofa"),
    ("bookcase", "bookshelf"), ("board", None), ("clutter", "clutter"),
)
# Pointcept's Matterport3D 21 ids (segment.npy): the NYU-40 subset of ScanNet-20 plus ceiling.
MATTERPORT21 = (
    ("wall", "wall"), ("floor", "floor"), ("cabinet", "cabinet"), ("bed", "bed"), ("chair", "chair"),
    ("sofa", "sofa"), ("table", "table"), ("door", "door"), ("window", "window"),
    ("bookshelf", "bookshelf"), ("picture", None), ("counter", None), ("desk", "table"),
    ("curtain", None), ("refrigerator", None), ("shower curtain", None), ("toilet", None),
    ("sink", None), ("bathtub", None), ("other", None), ("ceiling", "ceiling"),
)

MAPPINGS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "scannet": SCANNET20,
    "s3dis": S3DIS13,
    "matterport3d": MATTERPORT21,
}


def lookup_table(mapping: tuple[tuple[str, str | None], ...]) -> np.ndarray:
    """An array that maps a dataset's raw id to the shared id (or IGNORE)."""
    return np.array([CLASS_ID[s] if s is not None else IGNORE for _, s in mapping], dtype=np.int64)


def mapped_classes(mapping: tuple[tuple[str, str | None], ...]) -> tuple[int, ...]:
    return tuple(sorted({CLASS_ID[s] for _, s in mapping if s is not None}))


def eval_classes(source_classes: tuple[int, ...], target_classes: tuple[int, ...]) -> tuple[int, ...]:
    """Classes a source->target pair is scored on: those labelled in both datasets."""
    return tuple(sorted(set(source_classes) & set(target_classes)))


def mapping_table() -> str:
    """A plain-text table of every real dataset's id -> shared class mapping (printed by `bench list`)."""
    lines = [f"shared classes: {', '.join(f'{i}:{c}' for i, c in enumerate(CLASSES))}"]
    for ds, mp in MAPPINGS.items():
        parts = [f"{i}:{raw}->{shared or 'ignore'}" for i, (raw, shared) in enumerate(mp)]
        lines.append(f"{ds}: " + ", ".join(parts))
    return "\n".join(lines)
