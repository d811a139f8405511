"""A cell: one unit of work of a grid, resolved once, typed and frozen.

A cell's *plain form* is the JSON-able dict that a grid expands to (method, its parameters as the
grid's method table wrote them, recipe, backbone and teacher tables, source, target, scene counts,
seed, model seed, device, and ``hp``: where selected values came from). ``resolve`` turns it into a
:class:`Cell` with validated config objects for every axis (each distinct table built once per process
and shared by the cells that use it), the target as a stream of segments, and what the cell needs
(teacher, lifting, source scenes) derived from the method's ``needs`` and the recipe's declaration.
``Cell.to_dict``/``Cell.from_dict`` round-trip through the plain form, which is what process pools
and Ray carry.

**Identity.** A cell's identity is its *configuration*, never where a value came from: ``identity``
is built from the typed configs (every field of the method's config, the model's identity, the
stream, seeds, lifting, prediction and protocol), so a value written in the grid, taken from a
selection file (``bench/selected``) or left at its default gives the same identity when it is the
same value. ``cell_id`` is a hash of it, so it is the same wherever the cell is resolved, and the
per-scene random generators are seeded from it. Provenance (``hp``) travels in the plain form and is
recorded in the rows (``bench.select.hp_columns``). Settings that cannot change the numbers do not
enter: the lifting of a cell whose method reads no teacher features, and ``views`` at or above the
number of views every scene of the target has (it is "all"). Cells with equal identities are one
cell (``bench.grid`` keeps the first and drops or aliases the rest).

**Replication.** ``seed`` draws a test stream and the adaptation randomness over one source model;
``model_seed`` (default 0, the shipped reference models' seed) is the seed of the source model's
training. The unit of replication is the *test scene within a stream*: the seeds of a target are
independent streams of disjoint scenes over one model, and model seeds add model variance where a
study wants it. Seed s reads its own block of each split: for each (base dataset, split) that the
stream reads, with ``span`` = the largest ``start + scenes`` of its segments there, seed s reads
scene numbers ``[s * span, (s + 1) * span)`` (each segment shifted by ``s * span``), so no scene
(under any corruption) is in two seeds of a stream, and the segments of a multi-segment stream keep
their relative layout; the forgetting probe's clean source val scenes shift the same way by
``probe_scenes``. A segment that reads every scene of a split (``scenes = 0``, real data) can only
be seed 0.

The target is a *stream*: an ordered list of :class:`Segment` (dataset spec, split, scene count). A
classic source->target pair is one segment of the target's test split; its plain form keeps the
``target`` string and ``test_scenes`` count. Longer streams write ``target`` as a list of segment tables.

How the stream is run is the cell's :class:`StreamProtocol` (scenarios): ``order`` of the scenes
("sequential": segment after segment, the continual and gradual scenarios; "shuffled": every scene
of every segment in one seeded random order, the mixed scenario; "by_class": sorted by the scene's
dominant labelled object class, then its room type where the scene carries one, the correlated
scenario), ``reset_every`` (an online method is reset to the source model every K scenes, as RDumb
does) and a forgetting probe (``probe_every`` N scenes, ``probe_scenes`` clean scenes of the
source's val split are predicted without adapting and tracked apart from the main mIoU).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from bench.cache import stable_hash
from bench.errors import BenchError

SPLITS = ("train", "val", "test")
PREDICT = ("after", "same")  # when the prediction is taken: a separate forward after adapting, or the adapting one
# per-cell settings that a method table may also set (they are not method parameters)
CELL_SETTINGS = ("views", "lift_tol", "predict", "reset_every")
DEFAULTS = {"views": "all", "lift_tol": 0.1, "predict": "after", "split": "test", "test_scenes": 8,
            "train_scenes": 96, "val_scenes": 8, "features": ("color", "normal"), "device": "cpu", "model_seed": 0}
PLAIN_ONLY = ("grid", "label", "cell_id", "hp")  # plain-form keys that are not the cell's configuration
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
ORDERS = ("sequential", "shuffled", "by_class")
# options of a grid's stream table (besides source and target) and the protocol's defaults
STREAM_KEYS = ("order", "order_seed", "probe_every", "probe_scenes")
PROTOCOL_DEFAULTS = {"order": "sequential", "order_seed": 0, "reset_every": 0, "probe_every": 0, "probe_scenes": 2}
STRUCTURAL = ("wall", "floor", "ceiling")  # not counted as a scene's dominant class while it has objects


@dataclass(frozen=True)
class Segment:
    """A part of a target stream: ``scenes`` scenes (0 = all) of ``split`` of dataset spec ``dataset``,
    from the split's scene number ``start`` on (so two segments of one dataset can read disjoint scenes)."""

    dataset: str
    split: str = "test"
    scenes: int = 8
    start: int = 0

    @property
    def spec(self):
        from bench.data.datasets import DatasetSpec

        return DatasetSpec.parse(self.dataset)

    def to_dict(self) -> dict:
        d = {"dataset": self.dataset, "split": self.split, "scenes": self.scenes}
        return {**d, "start": self.start} if self.start else d

    def overlaps(self, other: Segment) -> bool:
        """Both read some same scene (same dataset spec and split, intersecting scene ranges)."""
        if (self.dataset, self.split) != (other.dataset, other.split):
            return False
        end = lambda s: float("inf") if s.scenes == 0 else s.start + s.scenes  # noqa: E731
        return self.start < end(other) and other.start < end(self)


@dataclass(frozen=True)
class StreamProtocol:
    """How a cell runs its stream: scene order, periodic reset and the forgetting probe."""

    order: str = "sequential"  # sequential | shuffled | by_class
    order_seed: int = 0  # seed of the "shuffled" order
    reset_every: int = 0  # reset an online method to the source model every K scenes (0 = never)
    probe_every: int = 0  # predict the probe scenes every N target scenes (0 = no probe)
    probe_scenes: int = 2  # clean scenes of the source's val split in each probe

    def label(self) -> str:
        """A short suffix for the target label ('' for the default protocol)."""
        parts = [self.order if self.order != "sequential" else ""]
        parts.append(f"probe/{self.probe_every}" if self.probe_every else "")
        shown = " ".join(p for p in parts if p)
        return f" [{shown}]" if shown else ""


def parse_protocol(d: dict, settings: dict, where: str) -> StreamProtocol:
    """The stream protocol of a cell's plain form ``d`` (``reset_every`` may also come from the
    method table's ``settings``), validated with messages that name the bad value."""
    order = d.get("order", PROTOCOL_DEFAULTS["order"])
    if order not in ORDERS:
        raise BenchError(f"{where}: order = {order!r} unknown; valid: {', '.join(repr(o) for o in ORDERS)}")
    seed = d.get("order_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise BenchError(f"{where}: order_seed = {seed!r} must be a whole number")
    if "order_seed" in d and order != "shuffled":
        raise BenchError(f"{where}: order_seed only applies to order = 'shuffled' (order is {order!r}); remove it")
    reset = _count(settings.get("reset_every", d.get("reset_every", 0)), f"{where}: reset_every", zero="never")
    every = _count(d.get("probe_every", 0), f"{where}: probe_every", zero="none")
    n = _count(d.get("probe_scenes", PROTOCOL_DEFAULTS["probe_scenes"]), f"{where}: probe_scenes", 1)
    if "probe_scenes" in d and not every:
        raise BenchError(f"{where}: probe_scenes = {n} without probe_every; set probe_every = N (probe every N "
                         "target scenes) or remove probe_scenes")
    return StreamProtocol(order, seed, reset, every, n)


def order_stream(items: list, order: str, seed: int = 0, key=None) -> list:
    """``items`` (a stream's scenes, in segment order) in the protocol's ``order``: unchanged for
    "sequential", a permutation drawn from ``seed`` for "shuffled", sorted by ``key(item)`` (stable)
    for "by_class"."""
    import numpy as np

    if order == "sequential":
        return list(items)
    if order == "shuffled":
        perm = np.random.default_rng(seed).permutation(len(items))
        return [items[i] for i in perm]
    if order == "by_class":
        if key is None:
            raise BenchError("order 'by_class' needs a key (the scenes' dominant class)")
        return sorted(items, key=key)
    raise BenchError(f"order = {order!r} unknown; valid: {', '.join(repr(o) for o in ORDERS)}")


def scene_order_key(scene) -> tuple[int, str]:
    """The "by_class" key of a scene: its dominant labelled class (by shared class id; walls,
    floors and ceilings count only in a scene without any other labelled point), then its room
    type where the scene carries one (``scene.room_type``), else ''."""
    import numpy as np

    from bench.data.classes import CLASS_ID, NUM_CLASSES

    lab = np.asarray(scene.label)
    counts = np.bincount(lab[lab >= 0], minlength=NUM_CLASSES)
    objects = counts.copy()
    objects[[CLASS_ID[c] for c in STRUCTURAL]] = 0
    dominant = int(np.argmax(objects)) if objects.sum() else (int(np.argmax(counts)) if counts.sum() else NUM_CLASSES)
    return dominant, str(getattr(scene, "room_type", "") or "")


@dataclass(frozen=True)
class Lift:
    """How teacher features are lifted onto the points: which views, and the depth tolerance (m)."""

    views: int | str = "all"
    tol: float = 0.1


@dataclass(frozen=True)
class Cell:
    grid: str
    label: str
    method: str
    params: dict[str, Any]  # the method's parameters as written (crossed), without cell settings
    method_cfg: Any  # the method's config dataclass instance
    needs: Any  # methods.base.Needs of the method
    recipe: str
    train_cfg: dict[str, Any]  # the grid's [train] table as written
    recipe_cfg: Any
    recipe_teacher: bool  # the recipe trains with a teacher (a 2D-feature projector head)
    recipe_mae: bool  # the recipe trains a reconstruction head
    train_on: str  # "source" or "target" (the Oracle control)
    backbone: dict[str, Any]  # {name, params...} as written
    backbone_cfg: Any
    teacher: dict[str, Any] | None  # {name, params...} as written, None when the cell uses none
    teacher_cfg: Any
    source: str
    stream: tuple[Segment, ...]  # as written; seed s reads ``read_stream`` (shifted to its own scenes)
    seed: int  # the test stream's and the adaptation's seed
    model_seed: int  # the source model's training seed
    device: str
    features: tuple[str, ...]
    train_scenes: int
    val_scenes: int
    lift: Lift
    predict: str
    data_options: dict[str, dict]  # per base dataset name, as written
    data_cfgs: dict[str, Any]  # per base dataset the cell reads: its validated config (built from data_options)
    plain: dict[str, Any]  # the plain form minus grid and label (what workers carry; with ``hp``)
    identity: dict[str, Any]  # the configuration, from the typed configs: what can change the numbers
    cell_id: str  # hash of ``identity``
    protocol: StreamProtocol = StreamProtocol()  # scene order, periodic reset, forgetting probe
    provenance: dict | None = None  # ``hp``: values taken from a selection file (what, from, on, at)
    aliases: tuple = ()  # cells of other roles whose rows are reported from this cell's (bench.grid)
    alias_of: str = ""  # for such an alias: the id of the cell whose rows stand for it
    holdout: tuple[str, ...] = ()  # open-set mode: classes held out of source training (bench.openset)

    # -- derived facts, each decided here once
    @property
    def uses_teacher(self) -> bool:
        """The cell needs a teacher: its method reads teacher features or its model's recipe trains with one."""
        return self.teacher is not None

    @property
    def method_uses_teacher(self) -> bool:
        return bool(self.needs.teacher)

    @property
    def episodic(self) -> bool:
        return bool(getattr(self.method_cfg, "episodic", True))

    @property
    def target(self) -> str:
        """The target as one label: the dataset spec of a one-segment stream, else the segments joined by
        '>' (by '+' where the order mixes them), with the protocol's order and probe in brackets; a stream of
        one domain throughout is written 'SPEC xN' (N segments), one that repeats a cycle of domains
        '(A>B>C) xN' (``stream_period``)."""
        if len(self.stream) == 1:
            return self.stream[0].dataset + self.protocol.label()
        sep = ">" if self.protocol.order == "sequential" else "+"
        names = [s.dataset for s in self.stream]
        period = stream_period(names)
        if period < len(names):  # one domain throughout (constant), or a cycle of domains that recurs
            cycle = names[0] if period == 1 else "(" + sep.join(names[:period]) + ")"
            return f"{cycle} x{len(names) // period}" + self.protocol.label()
        specs = [s.spec for s in self.stream]
        if len({(d.base, d.corruption) for d in specs}) == 1 and specs[0].corruption:  # a gradual stream
            return f"{specs[0].base}:{specs[0].corruption}@" + sep.join(str(d.severity) for d in specs) + \
                self.protocol.label()
        return sep.join(s.dataset for s in self.stream) + self.protocol.label()

    @property
    def test_scenes(self) -> int:
        return sum(s.scenes for s in self.stream)

    @property
    def read_stream(self) -> tuple[Segment, ...]:
        """The segments this cell's seed reads: ``stream`` shifted to the seed's own scenes
        (``seed_stream``)."""
        return seed_stream(self.stream, self.seed)

    def probe_offset(self) -> int:
        """Where the seed's forgetting-probe scenes start among the source's val scenes that follow
        the model's own validation scenes: ``seed * probe_scenes``."""
        return self.seed * self.protocol.probe_scenes

    def training_data(self) -> str:
        """The dataset spec the cell's model is trained on: the source, or the (uncorrupted) target
        for models trained on the target (the Oracle control)."""
        if self.train_on == "target":
            return self.stream[0].spec.base
        return self.source

    def data_options_for(self, spec: str) -> dict:
        from bench.data.datasets import DatasetSpec

        return dict(self.data_options.get(DatasetSpec.parse(spec).base, {}))

    def model_identity(self) -> dict:
        """Everything that defines the cell's trained model (cells with equal identities share one):
        backbone, features, recipe and its settings, the recipe's teacher, training data and its
        options, train-scene count, the *model* seed (not the stream's ``seed``: the seeds of a target
        adapt one model) and the model code version. A teacher-trained recipe lifts its teacher
        features with the default lifting (all views, the default depth tolerance), whatever the
        cell's test-time ``views``/``lift_tol``, so those are not part of the model. Classes held out of
        training (open-set mode, ``holdout``) enter as the key ``holdout`` only when there are any, so
        every other model keeps its identity (and the shipped models their keys)."""
        from backbones.model import MODEL_CODE_VERSION

        teacher = None
        if self.recipe_teacher:
            teacher = {"name": self.teacher["name"], **_plain_cfg(self.teacher_cfg, drop=("device",))}
        data = self.training_data()
        ident = {"backbone": self.backbone["name"], "backbone_cfg": _plain_cfg(self.backbone_cfg),
                 "features": list(self.features), "recipe": self.recipe, "train": _plain_cfg(self.recipe_cfg),
                 "kd": teacher, "mae": self.recipe_mae, "data": data, "data_options": self.data_options_for(data),
                 "n_train": self.train_scenes, "seed": self.model_seed, "code": MODEL_CODE_VERSION}
        if self.holdout:
            ident["holdout"] = list(self.holdout)
        return ident

    @property
    def holdout_ids(self) -> tuple[int, ...]:
        """The class ids held out of source training (open-set mode; empty otherwise)."""
        from bench.openset import class_ids

        return class_ids(self.holdout)

    def model_key(self) -> str:
        """The one model key: the scheduler groups cells by it and the checkpoint cache names files by it."""
        return stable_hash(self.model_identity(), 24)

    def to_dict(self) -> dict:
        """The plain form (what process pools and Ray carry; ``from_dict`` resolves it again)."""
        return {"grid": self.grid, "label": self.label, **json.loads(json.dumps(self.plain))}

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        return resolve(d)


def _plain_cfg(cfg: Any, drop: tuple[str, ...] = ()) -> dict:
    if cfg is None:
        return {}
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return json.loads(json.dumps({k: v for k, v in d.items() if k not in drop}, default=str))


def cell_id(plain: dict) -> str:
    """The id of a cell given as its plain form: the resolved cell's id (a hash of its configuration,
    see the module docstring); a plain form that does not resolve gets a hash of it without grid,
    label and provenance (so its error row still has a stable id)."""
    try:
        return resolve(plain).cell_id
    except BenchError:
        return stable_hash({k: v for k, v in plain.items() if k not in PLAIN_ONLY})


def seed_stream(stream: tuple[Segment, ...], seed: int) -> tuple[Segment, ...]:
    """The segments that seed ``seed`` reads: for each (base dataset, split) of the stream, with
    ``span`` = the largest ``start + scenes`` of the stream's segments there, every segment there is
    shifted by ``seed * span``. Seeds of one stream thus read disjoint scenes of every split (under
    any corruption: scenes are numbered by the base dataset), and seed 0 reads what is written."""
    if seed == 0:
        return tuple(stream)
    span: dict[tuple[str, str], int] = {}
    for s in stream:
        if s.scenes == 0:
            raise BenchError(f"seed {seed}: segment {s.dataset} ({s.split} split) reads every scene (scenes = 0), "
                             "so no other seed can read scenes of its own; use seeds = [0] or give a scene count")
        key = (_base(s.dataset), s.split)
        span[key] = max(span.get(key, 0), s.start + s.scenes)
    return tuple(dataclasses.replace(s, start=s.start + seed * span[(_base(s.dataset), s.split)]) for s in stream)


def _base(spec: str) -> str:
    return spec.split(":", 1)[0]


def views_per_scene(base: str) -> int | None:
    """The number of views every scene of dataset ``base`` has, where the dataset fixes it (the
    synthetic world renders ``SynthConfig.views`` per scene); None where it varies (real data)."""
    from bench.data import DATASETS
    from bench.data.synth import SynthDatasetConfig

    if base not in DATASETS or DATASETS.get(base).config is not SynthDatasetConfig:
        return None
    from bench.data.synth.generate import SynthConfig

    return int(SynthConfig().views)


def canonical_views(views: int | str, stream: tuple[Segment, ...]) -> int | str:
    """``views`` as the identity sees it: "all" when it is at least the number of views of every
    scene the stream reads (``views_per_scene``), else as given."""
    if views == "all":
        return views
    counts = [views_per_scene(_base(s.dataset)) for s in stream]
    return "all" if counts and all(c is not None and views >= c for c in counts) else views


def parse_stream(target: Any, test_scenes: int | None, where: str) -> tuple[Segment, ...]:
    """``target`` as a stream: a dataset spec string (one test segment of ``test_scenes`` scenes) or
    a list of tables {dataset, split = "test", scenes = test_scenes}."""
    default_n = DEFAULTS["test_scenes"] if test_scenes is None else test_scenes
    if isinstance(target, str):
        return (Segment(target, "test", _count(default_n, f"{where}: test_scenes", zero="all")),)
    if isinstance(target, list) and target:
        out = []
        for i, seg in enumerate(target):
            if isinstance(seg, str):
                seg = {"dataset": seg}
            if not isinstance(seg, dict) or "dataset" not in seg:
                raise BenchError(f"{where}: stream segment {i + 1} must be a dataset spec or a table with "
                                 f"'dataset' (and optional 'split', 'scenes', 'start'), got {seg!r}")
            bad = sorted(set(seg) - {"dataset", "split", "scenes", "start"})
            if bad:
                raise BenchError(f"{where}: stream segment {i + 1} has unknown key(s) {', '.join(bad)}; "
                                 "valid keys: dataset, split, scenes, start")
            split = seg.get("split", "test")
            if split not in SPLITS:
                raise BenchError(f"{where}: stream segment {i + 1}: split {split!r} unknown; "
                                 f"valid: {', '.join(SPLITS)}")
            if not isinstance(seg["dataset"], str):
                raise BenchError(f"{where}: stream segment {i + 1}: dataset must be a dataset spec string")
            out.append(Segment(seg["dataset"], split, _count(seg.get("scenes", default_n),
                                                              f"{where}: stream segment {i + 1} scenes", zero="all"),
                               _count(seg.get("start", 0), f"{where}: stream segment {i + 1} start")))
            for j, prev in enumerate(out[:-1]):
                if prev.overlaps(out[-1]):
                    raise BenchError(f"{where}: stream segments {j + 1} and {i + 1} both read scenes of "
                                     f"{prev.dataset} ({prev.split}); give segment {i + 1} start = "
                                     f"{prev.start + prev.scenes} so that no scene is adapted on twice")
        return tuple(out)
    raise BenchError(f"{where}: target must be a dataset spec or a non-empty list of segments, got {target!r}")


def stream_plain(stream: tuple[Segment, ...]) -> tuple[Any, int | None]:
    """The plain form of a stream: (target, test_scenes); one test segment keeps the classic layout."""
    if len(stream) == 1 and stream[0].split == "test":
        return stream[0].dataset, stream[0].scenes
    return [s.to_dict() for s in stream], None


def stream_period(datasets: list[str]) -> int:
    """The shortest period p of a stream's segment dataset specs: the smallest p that divides their
    number and repeats the first p throughout (1: one domain throughout, a constant-difficulty stream;
    p < n: a recurring cycle of p domains); ``len(datasets)`` when nothing repeats."""
    n = len(datasets)
    return next(p for p in range(1, n + 1) if n % p == 0 and datasets == datasets[:p] * (n // p))


def visits(datasets: list[str]) -> list[int]:
    """Per segment, the how-many-th visit of its dataset spec it is (1 = first time the stream reads that
    domain): the recurring scenario's per-visit numbering, segment k of a constant stream is visit k."""
    seen: dict[str, int] = {}
    out = []
    for d in datasets:
        seen[d] = seen.get(d, 0) + 1
        out.append(seen[d])
    return out


def _count(v: Any, what: str, minimum: int = 0, zero: str | None = None) -> int:
    """``v`` if it is a whole number >= ``minimum``; ``zero`` says what 0 means in the message."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise BenchError(f"{what} = {v!r} must be a whole number")
    if v < minimum:
        raise BenchError(f"{what} = {v} must be >= {minimum}" + (f" (0 = {zero})" if zero else ""))
    return v


def check_views(v: Any, where: str) -> int | str:
    if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    raise BenchError(f"{where}: views = {v!r} must be a number of views >= 1 or \"all\"")


def check_tol(v: Any, where: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return float(v)
    raise BenchError(f"{where}: lift_tol = {v!r} must be a positive number (metres)")


def check_device_name(device: Any, what: str = "device =") -> str:
    """``device`` if it is written 'cpu', 'cuda' or 'cuda:N' (whether this machine has it is
    ``check_device``'s question); ``what`` names where it was given (``device =``, ``--device``)."""
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise BenchError(f"{what} {device!r} must be 'cpu', 'cuda' or 'cuda:N'")
    return device


def check_features(features: Any) -> list[str]:
    """The per-point input features: a non-empty list of ``backbones.batch.FEATURES`` names."""
    from backbones.batch import FEATURES

    if not isinstance(features, list) or not features or any(f not in FEATURES for f in features):
        raise BenchError(f"features = {features!r} must be a non-empty list of {', '.join(FEATURES)}")
    return features


def check_device(device: Any, what: str = "device") -> str:
    """``device`` if it is 'cpu', 'cuda' or 'cuda:N' and this machine has it; else a BenchError that
    names the device and the fix (``what`` names where it was given, e.g. ``--device``)."""
    check_device_name(device, what)
    if device == "cpu":
        return device
    import torch

    cpu_hint = "" if what.startswith("--") else ' (or device = "cpu" in the grid)'
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None else
               "torch finds no CUDA GPU: none here, no driver, or CUDA_VISIBLE_DEVICES hides them")
        raise BenchError(f"{what} {device!r} is not available on this machine ({why}); run on the CPU with "
                         f"--device cpu{cpu_hint}")
    n = torch.cuda.device_count()
    if ":" in device and int(device.split(":")[1]) >= n:
        have = ", ".join(f"cuda:{i}" for i in range(n))
        raise BenchError(f"{what} {device!r}: this machine has {n} CUDA device(s) ({have}); pick one of them, "
                         f"or run on the CPU with --device cpu{cpu_hint}")
    return device


def check_predict(v: Any, where: str) -> str:
    if v in PREDICT:
        return v
    raise BenchError(f"{where}: predict = {v!r} must be one of {', '.join(repr(p) for p in PREDICT)}")


_CONFIGS: dict[tuple, Any] = {}


def built_config(entry, table: dict, what: str):
    """``entry``'s validated config of ``table`` (``bench.registry.make_config``), built once per process
    for each distinct table and shared by every cell that uses it (configs are never mutated)."""
    from bench.registry import make_config

    key = (what, id(entry), entry.name, json.dumps(table, sort_keys=True, default=str))
    if key not in _CONFIGS:
        _CONFIGS[key] = make_config(entry, table, what)
    return _CONFIGS[key]


def resolve(plain: dict, where: str = "cell") -> Cell:
    """The typed, validated cell of a plain form. Raises BenchError naming ``where`` and the bad value."""
    from backbones import BACKBONES, RECIPES
    from bench.data import DATASETS
    from bench.data.corrupt import CORRUPTIONS
    from bench.data.datasets import DatasetSpec
    from methods import METHODS
    from methods.base import Needs
    from teachers import TEACHERS

    d = dict(plain)
    try:
        entry = METHODS.get(d["method"])
    except KeyError:
        raise BenchError(f"{where}: no 'method'") from None
    mwhere = f"{where}: method '{d['method']}'"
    table = dict(d.get("params") or {})
    settings = {k: table.pop(k) for k in CELL_SETTINGS if k in table}
    method_cfg = _wrap(where, built_config, entry, table, "method")
    needs = getattr(entry.factory, "needs", Needs())
    recipe = d.get("recipe") or needs.recipe
    recipe_entry = _wrap(mwhere, RECIPES.get, recipe)
    train_cfg = dict(d.get("train_cfg") or {})
    recipe_cfg = _wrap(f"{where}: [train]", built_config, recipe_entry, train_cfg, "recipe")
    recipe_teacher = bool(recipe_entry.extra.get("teacher"))
    train_on = d.get("train_on", "source")
    if train_on not in ("source", "target"):
        raise BenchError(f"{mwhere}: train_on must be 'source' or 'target', got {train_on!r}")

    bb = d.get("backbone")
    bb = {"name": bb} if isinstance(bb, str) else dict(bb or {})
    bb_entry = _wrap(where, BACKBONES.get, bb.get("name", ""))
    backbone_cfg = _wrap(where, built_config, bb_entry, {k: v for k, v in bb.items() if k != "name"}, "backbone")
    teacher = d.get("teacher")
    if isinstance(teacher, str):
        teacher = {"name": teacher}
    teacher_cfg = None
    if uses_teacher(needs, recipe):
        if not teacher:
            raise BenchError(f"{mwhere} (recipe {recipe}) needs a teacher; add a 'teachers' list")
        t_entry = _wrap(where, TEACHERS.get, teacher.get("name", ""))
        teacher_cfg = _wrap(where, built_config, t_entry, {k: v for k, v in teacher.items() if k != "name"},
                            "teacher")
    elif teacher:
        raise BenchError(f"{mwhere}: uses no teacher, but the cell names teacher {teacher.get('name')!r}")

    source = d.get("source")
    if not isinstance(source, str):
        raise BenchError(f"{where}: source must be a dataset spec string, got {source!r}")
    stream = parse_stream(d.get("target"), d.get("test_scenes"), where)
    for spec in [source] + [s.dataset for s in stream]:
        ds = DatasetSpec.parse(spec)
        _wrap(where, DATASETS.get, ds.base)
        if ds.corruption:
            _wrap(where, CORRUPTIONS.get, ds.corruption)
    if DatasetSpec.parse(source).corruption:
        raise BenchError(f"{where}: source '{source}' is corrupted; corruptions apply to targets only")
    if train_on == "target" and len({s.spec.base for s in stream}) > 1:
        raise BenchError(f"{mwhere}: train_on = 'target' needs a stream of one dataset, got {stream}")

    data_options = d.get("data_options") or {}
    if not isinstance(data_options, dict) or not all(isinstance(v, dict) for v in data_options.values()):
        raise BenchError(f"{where}: data_options must be tables [data_options.DATASET], got {data_options!r}")
    for name, opts in data_options.items():
        ds_entry = _wrap(f"{where}: [data_options.{name}]", DATASETS.get, name)
        _wrap(f"{where}: [data_options.{name}]", built_config, ds_entry, opts, "dataset")
    bases = dict.fromkeys([DatasetSpec.parse(source).base] + [s.spec.base for s in stream])
    data_cfgs = {b: _wrap(f"{where}: [data_options.{b}]", built_config, DATASETS.get(b), data_options.get(b, {}),
                          "dataset") for b in bases}

    features = _wrap(where, check_features, d.get("features", list(DEFAULTS["features"])))
    device = _wrap(where, check_device_name, d.get("device", DEFAULTS["device"]))
    seed = _wrap(where, _count, d.get("seed", 0), "seed")
    model_seed = _wrap(where, _count, d.get("model_seed", DEFAULTS["model_seed"]), "model_seed")
    _wrap(where, seed_stream, stream, seed)  # a seed > 0 cannot read every scene of a split
    lift = Lift(check_views(settings.get("views", d.get("views", DEFAULTS["views"])), where),
                check_tol(settings.get("lift_tol", d.get("lift_tol", DEFAULTS["lift_tol"])), where))
    predict = check_predict(settings.get("predict", d.get("predict", DEFAULTS["predict"])), where)
    protocol = parse_protocol(d, settings, where)
    from bench.openset import parse_holdout

    holdout = parse_holdout(d.get("holdout_classes"), where)
    if holdout and train_on != "source":
        raise BenchError(f"{mwhere}: holdout_classes (open-set mode) hold classes out of *source* training; a model "
                         "trained on the target (train_on = 'target') cannot be open-set: remove the Oracle row")
    hp = d.get("hp") or None
    cell = Cell(
        grid=str(d.get("grid", "")), label=str(d.get("label", d["method"])), method=d["method"], params=table,
        method_cfg=method_cfg, needs=needs, recipe=recipe, train_cfg=train_cfg, recipe_cfg=recipe_cfg,
        recipe_teacher=recipe_teacher, recipe_mae=bool(recipe_entry.extra.get("mae")), train_on=train_on,
        backbone=bb, backbone_cfg=backbone_cfg, teacher=teacher if teacher_cfg is not None else None,
        teacher_cfg=teacher_cfg, source=source, stream=stream, seed=seed, model_seed=model_seed, device=device,
        features=tuple(features),
        train_scenes=_count(d.get("train_scenes", DEFAULTS["train_scenes"]), f"{where}: train_scenes"),
        val_scenes=_count(d.get("val_scenes", DEFAULTS["val_scenes"]), f"{where}: val_scenes", zero="none"),
        lift=lift, predict=predict, data_options={k: dict(v) for k, v in data_options.items()}, data_cfgs=data_cfgs,
        plain={k: v for k, v in d.items() if k not in ("grid", "label", "cell_id")}, identity={}, cell_id="",
        protocol=protocol, provenance=hp, holdout=holdout)
    identity = configuration(cell)
    return dataclasses.replace(cell, identity=identity, cell_id=stable_hash(identity))


def configuration(cell: Cell) -> dict:
    """A cell's identity: its configuration from the typed configs, without provenance (see the module
    docstring). Two cells with equal configurations compute the same numbers."""
    reads_teacher = cell.method_uses_teacher
    return {
        "model": cell.model_identity(),
        "method": cell.method, "params": _plain_cfg(cell.method_cfg),
        "teacher": {"name": cell.teacher["name"], **_plain_cfg(cell.teacher_cfg)} if reads_teacher else None,
        "lift": {"views": canonical_views(cell.lift.views, cell.stream), "tol": cell.lift.tol} if reads_teacher
        else None,
        "source": cell.source, "stream": [s.to_dict() for s in cell.stream], "seed": cell.seed,
        "data": {b: _plain_cfg(c) for b, c in sorted(cell.data_cfgs.items())},
        "predict": cell.predict, "protocol": dataclasses.asdict(cell.protocol), "device": cell.device,
    }


def uses_teacher(needs, recipe: str) -> bool:
    """Does a cell use a teacher? Decided here only: its method's ``needs.teacher``, or a recipe whose
    declaration (``teacher=True`` at registration) trains with lifted teacher features."""
    from backbones import RECIPES

    return bool(needs.teacher) or (recipe in RECIPES and bool(RECIPES.get(recipe).extra.get("teacher")))


def _wrap(where: str, fn, *args):
    try:
        return fn(*args)
    except BenchError as e:
        raise BenchError(f"{where}: {e}") from None


def shown_name(cell: Cell) -> str:
    """The cell's label with its parameters and the settings that differ from their defaults."""
    shown = dict(cell.params)
    if cell.lift.views != "all" and cell.uses_teacher:
        shown["views"] = cell.lift.views
    if cell.predict != "after":
        shown["predict"] = cell.predict
    if cell.protocol.reset_every:
        shown["reset_every"] = cell.protocol.reset_every
    params = ",".join(f"{k}={v}" for k, v in sorted(shown.items()))
    return f"{cell.label}{'(' + params + ')' if params else ''}"


def describe(cell: Cell) -> str:
    """A one-line human description of a cell (logs, dry runs)."""
    t = f" [{cell.teacher['name']}]" if cell.teacher else ""
    m = f"/m{cell.model_seed}" if cell.model_seed else ""
    o = f" open-set(-{','.join(cell.holdout)})" if cell.holdout else ""
    return f"{shown_name(cell)}{t} {cell.backbone['name']} {cell.source}->{cell.target} s{cell.seed}{m}{o}"
