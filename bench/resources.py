"""Per-process caches of what cells share: opened datasets, loaded scenes, built teachers.

A worker process runs many cells; each of these is built once per process and reused (the on-disk
caches for scenes, teacher features and checkpoints are in ``bench.cache``'s folder).
"""

from __future__ import annotations

import json
from functools import lru_cache

from bench.data.datasets import DatasetSpec
from bench.spec import Cell

MAX_SCENES = 96
_SCENES: dict = {}


@lru_cache(maxsize=16)
def _dataset(spec: str, options_json: str):
    from bench.data import get_dataset

    return get_dataset(spec, **json.loads(options_json))


def dataset(spec: str, options: dict | None = None):
    """The dataset of ``spec`` opened with ``options`` (its ``[data_options.BASE]`` table)."""
    return _dataset(spec, json.dumps(options or {}, sort_keys=True))


def dataset_for(cell: Cell, spec: str):
    """A dataset of the cell, opened with the cell's options for its base dataset."""
    return dataset(spec, cell.data_options.get(DatasetSpec.parse(spec).base, {}))


def load_scene(ds, name: str, with_views: bool):
    key = (ds.name, json.dumps(ds.fingerprint(), sort_keys=True), name, with_views)
    if key not in _SCENES:
        if len(_SCENES) > MAX_SCENES:
            _SCENES.pop(next(iter(_SCENES)))
        _SCENES[key] = ds.load(name, with_views)
    return _SCENES[key]


@lru_cache(maxsize=8)
def _teacher(spec_json: str, device: str):
    from teachers import build_teacher

    return build_teacher(json.loads(spec_json), device)


def teacher(cell: Cell):
    """The cell's teacher, built once per process."""
    return _teacher(json.dumps(cell.teacher, sort_keys=True), cell.device)


def data_key(cell: Cell) -> str:
    """A hash of the fingerprints of every dataset the cell reads (its training data, its pair's source
    and each stream segment's dataset): for synthetic domains the world version, domain parameters and
    seed. Recorded with each result row; a resumed run re-runs finished cells whose data changed since
    (a run folder of an older world is never silently mixed into a new one). Teacher weights are not
    part of it."""
    from bench.cache import stable_hash

    specs = sorted({cell.training_data(), cell.source, *(seg.dataset for seg in cell.stream)})
    return stable_hash([dataset_for(cell, s).fingerprint() for s in specs])


def feature_cache(cell: Cell):
    """The cell's teacher-feature cache with the cell's lifting settings (views, tolerance)."""
    from teachers.cache import FeatureCache

    return FeatureCache(teacher(cell), cell.lift.views, cell.lift.tol)


def train_val_names(cell: Cell, ds) -> tuple[list[str], list[str]]:
    """The training and validation scenes of the cell's model in its training dataset ``ds``."""
    vnames = ds.scene_names("val", cell.val_scenes) if cell.val_scenes else []
    return ds.scene_names("train", cell.train_scenes), vnames


def stream_names(cell: Cell) -> list[tuple[int, object, list[str]]]:
    """(segment index, dataset, scene names) of each segment of the cell's target stream, then, for a
    cell with a forgetting probe, (-1, source dataset, its probe scenes: clean scenes of the source's
    val split after those the model was validated on)."""
    out = []
    for i, seg in enumerate(cell.stream):
        ds = dataset_for(cell, seg.dataset)
        out.append((i, ds, ds.scene_names(seg.split, seg.start + seg.scenes if seg.scenes else 0)[seg.start:]))
    if cell.protocol.probe_every:
        src = dataset_for(cell, cell.source)
        skip = cell.val_scenes if cell.training_data() == cell.source else 0  # not the model's own val scenes
        out.append((-1, src, src.scene_names("val", skip + cell.protocol.probe_scenes)[skip:]))
    return out


def scenes_needed(cell: Cell) -> list:
    """(dataset, scene names) pairs the cell reads: training and validation scenes of its model's
    data, the scenes of its target stream, and the clean source scenes its method's ``prepare``
    takes. Raises BenchError if a dataset cannot be opened or has too few scenes."""
    train = dataset_for(cell, cell.training_data())
    names, vnames = train_val_names(cell, train)
    out = [(train, names + vnames)]
    out += [(ds, n) for _, ds, n in stream_names(cell)]
    if cell.needs.source_scenes:
        src = dataset_for(cell, cell.source)
        out.append((src, src.scene_names("train", cell.needs.source_scenes)))
    return out
