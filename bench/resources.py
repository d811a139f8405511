"""Per-process caches of what cells share: opened datasets, loaded scenes, built teachers.

A worker process runs many cells; each of these is built once per process and reused (the on-disk
caches for scenes, teacher features and checkpoints are in ``bench.cache``'s folder).
"""

from __future__ import annotations

import json
from functools import lru_cache

from bench.data.datasets import DatasetSpec
from bench.errors import BenchError
from bench.spec import DEFAULTS, Cell, Lift

MAX_SCENES = 96
_SCENES: dict = {}
_DATASETS: dict = {}


@lru_cache(maxsize=16)
def _dataset(spec: str, options_json: str):
    from bench.data import get_dataset

    return get_dataset(spec, **json.loads(options_json))


def dataset(spec: str, options: dict | None = None):
    """The dataset of ``spec`` opened with ``options`` (its ``[data_options.BASE]`` table)."""
    return _dataset(spec, json.dumps(options or {}, sort_keys=True))


def dataset_for(cell: Cell, spec: str):
    """A dataset of the cell, opened with the config the cell resolved for its base dataset (built once,
    at grid load); one object per spec and config in a process."""
    from bench.data import get_dataset
    from bench.spec import _plain_cfg

    base = DatasetSpec.parse(spec).base
    cfg = cell.data_cfgs.get(base)
    if cfg is None:  # a dataset outside the cell's configuration
        return dataset(spec, cell.data_options.get(base, {}))
    key = (spec, json.dumps(_plain_cfg(cfg), sort_keys=True))
    if key not in _DATASETS:
        if len(_DATASETS) >= 16:
            _DATASETS.pop(next(iter(_DATASETS)))
        _DATASETS[key] = get_dataset(spec, cfg=cfg)
    return _DATASETS[key]


def load_scene(ds, name: str, with_views: bool):
    key = (ds.name, json.dumps(ds.fingerprint(), sort_keys=True), name, with_views)
    if key not in _SCENES:
        if len(_SCENES) > MAX_SCENES:
            _SCENES.pop(next(iter(_SCENES)))
        _SCENES[key] = ds.load(name, with_views)
    return _SCENES[key]


_TEACHERS: dict = {}


def teacher(cell: Cell):
    """The cell's teacher, built once per process from the config the cell resolved at grid load."""
    from teachers import TEACHERS

    key = (json.dumps(cell.teacher, sort_keys=True), cell.device)
    if key not in _TEACHERS:
        if len(_TEACHERS) >= 8:
            _TEACHERS.pop(next(iter(_TEACHERS)))
        _TEACHERS[key] = TEACHERS.get(cell.teacher["name"]).factory(cfg=cell.teacher_cfg, device=cell.device)
    return _TEACHERS[key]


def data_key(cell: Cell) -> str:
    """A hash of the fingerprints of every dataset the cell reads (its training data, its pair's source
    and each stream segment's dataset): for synthetic domains the world version, domain parameters and
    seed. Recorded with each result row; a resumed run re-runs finished cells whose data changed since
    (a run folder of an older world is never silently mixed into a new one). Teacher weights are not
    part of it."""
    from bench.cache import stable_hash

    specs = sorted({cell.training_data(), cell.source, *(seg.dataset for seg in cell.stream)})
    return stable_hash([dataset_for(cell, s).fingerprint() for s in specs])


def feature_cache(cell: Cell, training: bool = False):
    """The cell's teacher-feature cache: with the cell's lifting settings (views, tolerance) for its
    method, with the default lifting for training its model (``training``; the model is part of
    several cells whatever their test-time lifting, see ``Cell.model_identity``)."""
    from teachers.cache import FeatureCache

    lift = Lift(DEFAULTS["views"], DEFAULTS["lift_tol"]) if training else cell.lift
    return FeatureCache(teacher(cell), lift.views, lift.tol)


def train_val_names(cell: Cell, ds) -> tuple[list[str], list[str]]:
    """The training and validation scenes of the cell's model in its training dataset ``ds``."""
    vnames = ds.scene_names("val", cell.val_scenes) if cell.val_scenes else []
    return ds.scene_names("train", cell.train_scenes), vnames


def stream_names(cell: Cell) -> list[tuple[int, object, list[str]]]:
    """(segment index, dataset, scene names) of each segment of the cell's target stream as its seed
    reads it (``Cell.read_stream``: each seed its own scenes), then, for a cell with a forgetting
    probe, (-1, source dataset, its probe scenes: clean scenes of the source's val split after those
    the model was validated on, the seed's own ``probe_scenes`` of them). A dataset with too few
    scenes for the seed raises a BenchError that says how many each seed reads."""
    out = []
    for i, (seg, read) in enumerate(zip(cell.stream, cell.read_stream)):
        ds = dataset_for(cell, seg.dataset)
        end = read.start + read.scenes if read.scenes else 0
        names = _names(ds, seg.split, end, cell, f"segment {seg.dataset} ({seg.split} split) reads {seg.scenes} "
                                                 f"scenes per seed")
        out.append((i, ds, names[read.start:]))
    if cell.protocol.probe_every:
        src = dataset_for(cell, cell.source)
        skip = cell.val_scenes if cell.training_data() == cell.source else 0  # not the model's own val scenes
        start = skip + cell.probe_offset()
        names = _names(src, "val", start + cell.protocol.probe_scenes, cell,
                       f"the forgetting probe reads {cell.protocol.probe_scenes} {cell.source} val scenes per seed")
        out.append((-1, src, names[start:]))
    return out


def _names(ds, split: str, count: int, cell: Cell, what: str) -> list[str]:
    """``ds.scene_names(split, count)``; for a seed > 0, a dataset without that many scenes is named
    with the seeds' share of the split."""
    try:
        return ds.scene_names(split, count)
    except BenchError as e:
        if not cell.seed:
            raise
        raise BenchError(f"{e}: seed {cell.seed} reads scene numbers up to {count - 1} of {ds.name} ({split} split), "
                         f"since every seed reads scenes of its own ({what}); use fewer seeds or fewer scenes "
                         "(seeds 0..S-1 need S times the scenes of one seed)") from None


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
