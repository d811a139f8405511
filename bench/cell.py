"""One cell: a pure function of its resolved config (plus the caches) that returns result rows.

(1) get the source model for (backbone, recipe, teacher, training data, seed) from the checkpoint
cache, training it if absent; (2) for each target test scene get the teacher features from the
feature cache (only if the method uses a teacher); (3) run the method over the target's scene
stream (reset before each scene when episodic); (4) return per-scene rows and one cell row.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import torch

from bench.data.classes import CLASSES, NUM_CLASSES, eval_classes
from bench.data.datasets import DatasetSpec
from bench.errors import BenchError
from bench.metrics import accuracy, confusion, iou_per_class, miou

log = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def _dataset(spec: str, options_json: str):
    from bench.data import get_dataset

    return get_dataset(spec, **json.loads(options_json))


_SCENES: dict = {}


def load_scene(ds, name: str, with_views: bool):
    key = (ds.name, json.dumps(ds.fingerprint(), sort_keys=True), name, with_views)
    if key not in _SCENES:
        if len(_SCENES) > 96:
            _SCENES.pop(next(iter(_SCENES)))
        _SCENES[key] = ds.load(name, with_views)
    return _SCENES[key]


@lru_cache(maxsize=8)
def _teacher(spec_json: str, device: str):
    from teachers import build_teacher

    return build_teacher(json.loads(spec_json), device)


def dataset_for(cell: dict, spec: str):
    opts = cell.get("data_options", {}).get(DatasetSpec.parse(spec).base, {})
    return _dataset(spec, json.dumps(opts, sort_keys=True))


def training_data(cell: dict) -> str:
    """The dataset the cell's model is trained on: the source, or the (uncorrupted) target for Oracle rows."""
    return DatasetSpec.parse(cell["target"]).base if cell["train_on"] == "target" else cell["source"]


def model_key(cell: dict) -> str:
    """What identifies the cell's trained model (cells with equal keys share one checkpoint)."""
    from backbones import RECIPES

    uses_teacher = bool(RECIPES.get(cell["recipe"]).extra.get("teacher"))
    data = training_data(cell)
    return json.dumps([cell["backbone"], cell["recipe"], cell["teacher"] if uses_teacher else None, data,
                       cell.get("data_options", {}).get(DatasetSpec.parse(data).base), cell["train_cfg"],
                       cell["features"], cell["train_scenes"], cell["val_scenes"], cell["seed"], cell["device"]],
                      sort_keys=True, default=str)


def train_val_names(cell: dict, ds) -> tuple[list[str], list[str]]:
    """The training and validation scenes of the cell's model in its training dataset ``ds``."""
    vnames = ds.scene_names("val", cell["val_scenes"]) if cell["val_scenes"] else []
    return ds.scene_names("train", cell["train_scenes"]), vnames


def scenes_needed(cell: dict) -> list:
    """(dataset, scene names) pairs the cell reads: training and validation scenes of its model's
    data, test scenes of its target. Raises BenchError if a dataset cannot be opened."""
    train = dataset_for(cell, training_data(cell))
    names, vnames = train_val_names(cell, train)
    target = dataset_for(cell, cell["target"])
    return [(train, names + vnames), (target, target.scene_names("test", cell["test_scenes"]))]


def feature_cache(cell: dict, views="all"):
    from teachers.cache import FeatureCache

    teacher = _teacher(json.dumps(cell["teacher"], sort_keys=True), cell["device"])
    return FeatureCache(teacher, views, cell["lift_tol"])


def get_model(cell: dict):
    """The cell's trained model (from the checkpoint cache, trained if absent) and cache info."""
    from backbones import RECIPES
    from backbones.checkpoint import checkpoint_key, get_or_train
    from backbones.model import ModelSpec
    from backbones.train import train
    from bench.registry import make_config

    recipe_entry = RECIPES.get(cell["recipe"])
    train_cfg = make_config(recipe_entry, cell["train_cfg"], "recipe")
    data_spec = training_data(cell)
    ds = dataset_for(cell, data_spec)
    uses_teacher = bool(recipe_entry.extra.get("teacher"))
    fc = feature_cache(cell) if uses_teacher else None
    spec = ModelSpec(backbone=cell["backbone"]["name"],
                     backbone_cfg={k: v for k, v in cell["backbone"].items() if k != "name"},
                     features=tuple(cell["features"]), kd_dim=fc.teacher.dim if fc else 0,
                     mae=bool(recipe_entry.extra.get("mae")))
    key = checkpoint_key(spec, cell["recipe"], cell["train_cfg"], fc.teacher.cache_key() if fc else None,
                         ds.fingerprint(), cell["train_scenes"], cell["seed"])

    def train_fn(model):
        names, vnames = train_val_names(cell, ds)
        ds.ensure(names + vnames, workers=torch.get_num_threads())
        scenes = [load_scene(ds, n, uses_teacher) for n in names]
        val = [load_scene(ds, n, False) for n in vnames]
        teacher_fn = (lambda s: fc.get(ds.fingerprint(), s)) if fc else None
        return train(model, train_cfg, scenes, val, cell["seed"], cell["device"], teacher_fn,
                     desc=f"train {spec.backbone}/{cell['recipe']} on {data_spec}")

    return get_or_train(key, spec, train_fn, cell["device"])


def _malloc_trim() -> None:
    """Give the heap's free memory back to the OS (glibc), so memory that a block reuses is counted."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS delta may then under-count reused memory
        pass


def _proc_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak memory while the block runs: CUDA max allocated, or on CPU the peak resident set size
    above its level at entry. On CPU the heap's free memory is returned to the OS at entry (so memory
    freed by earlier work and reused here is counted) and the kernel's high-water mark is reset
    (``/proc/self/clear_refs``), so the peak is exact and measuring costs nothing while the block runs.
    Where the mark cannot be reset, RSS is sampled every 5 ms instead.

    (An earlier version told glibc to mmap every block over 64 KiB so that frees showed in RSS: that
    made each forward pass 1.4x slower, measured, and so distorted the timings it sat next to.)"""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_rss_delta"
        self.peak_mb = float("nan")

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        _malloc_trim()
        self.thread = None
        self.base = _proc_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.hwm = True
        except OSError:
            self.hwm, self.peak, self.stop = False, self.base, threading.Event()

            def sample():
                while not self.stop.wait(0.005):
                    self.peak = max(self.peak, _proc_kb("VmRSS"))

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        if self.hwm:
            peak = _proc_kb("VmHWM")
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, _proc_kb("VmRSS"))
        self.peak_mb = max(0, peak - self.base) / 2**20


def _versions() -> dict:
    from bench.env import git_commit

    return {"torch_version": torch.__version__, "git_commit": git_commit(),
            "torch_threads": torch.get_num_threads()}  # float summation order, hence last bits, depend on it


def run_cell(cell: dict) -> tuple[dict, list[dict]]:
    """Run one cell; never raises: a failure becomes a row with status='error' and the message."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        row, scenes = _run(cell)
        row["status"], row["error"] = "ok", ""
    except Exception as e:  # noqa: BLE001 - recorded, the grid goes on
        log.debug("cell %s failed:\n%s", cell["cell_id"], traceback.format_exc())
        msg = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        row, scenes = {"status": "error", "error": msg}, []
    row.update(_base_row(cell))
    row.update(_versions())
    row["started_at"] = started
    row["cell_seconds"] = time.perf_counter() - t0
    return row, scenes


def _base_row(cell: dict) -> dict:
    from bench.registry import make_config
    from methods import METHODS

    cfg = make_config(METHODS.get(cell["method"]), cell["params"], "method")
    return {
        "cell_id": cell["cell_id"], "grid": cell["grid"], "method": cell["method"], "label": cell["label"],
        "params": json.dumps(cell["params"], sort_keys=True), "episodic": bool(getattr(cfg, "episodic", True)),
        "recipe": cell["recipe"], "train_on": cell["train_on"], "backbone": cell["backbone"]["name"],
        "backbone_cfg": json.dumps(cell["backbone"], sort_keys=True),
        "teacher": _teacher_label(cell["teacher"]), "source": cell["source"], "target": cell["target"],
        "seed": cell["seed"], "n_train": cell["train_scenes"], "n_test": cell["test_scenes"],
        "device": cell["device"], "features": ",".join(cell["features"]),
        "train_cfg": json.dumps(cell["train_cfg"], sort_keys=True),
        "views": str(cell["params"].get("views", "all")) if cell["teacher"] else "",
    }


def _teacher_label(t: dict | None) -> str:
    if not t:
        return ""
    extra = ",".join(f"{k}={v}" for k, v in sorted(t.items()) if k not in ("name", "weights", "device"))
    label = t["name"] + (f"({extra})" if extra else "")
    return label + (" [random-init]" if t.get("weights") == "random-init" else "")


def _run(cell: dict) -> tuple[dict, list[dict]]:
    from backbones.batch import make_batch
    from bench.registry import make_config
    from methods import METHODS
    from methods.base import SceneInput

    torch.manual_seed(cell["seed"])
    device = cell["device"]
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise BenchError("device 'cuda' requested but CUDA is not available here; use --device cpu")
    model, ckpt = get_model(cell)
    entry = METHODS.get(cell["method"])
    cfg = make_config(entry, cell["params"], "method")
    method = entry.factory(model, cfg)
    target = dataset_for(cell, cell["target"])
    source = dataset_for(cell, training_data(cell))
    classes = eval_classes(source.classes, target.classes)
    names = target.scene_names("test", cell["test_scenes"])
    target.ensure(names, workers=torch.get_num_threads())
    fc = feature_cache(cell, getattr(cfg, "views", "all")) if method.needs_teacher else None
    conf_total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    scene_rows, adapt_s, infer_s, steps = [], 0.0, 0.0, []
    with PeakMemory(device) as mem:
        for i, name in enumerate(names):
            scene = load_scene(target, name, fc is not None)
            g = torch.Generator().manual_seed(int(cell["cell_id"][:8], 16) + i)
            inp = SceneInput(make_batch([scene], model.spec.features).to(device), i, g)
            if fc is not None:
                feat, mask = fc.get(target.fingerprint(), scene)
                inp.teacher_feat = torch.from_numpy(feat).to(device)
                inp.teacher_mask = torch.from_numpy(mask).to(device)
            if cfg.episodic:
                method.reset()
            t = time.perf_counter()
            n_steps = method.adapt(inp)
            _sync(device)
            ta = time.perf_counter() - t
            t = time.perf_counter()
            pred = method.predict(inp).argmax(1).cpu().numpy()
            _sync(device)
            ti = time.perf_counter() - t
            conf = confusion(pred, scene.label, NUM_CLASSES, classes)
            conf_total += conf
            adapt_s, infer_s = adapt_s + ta, infer_s + ti
            steps.append(n_steps)
            scene_rows.append({"cell_id": cell["cell_id"], "scene": name, "index": i, "n_points": scene.num_points,
                               "miou": miou(conf, classes), "acc": accuracy(conf), "steps": n_steps,
                               "adapt_s": ta, "infer_s": ti, "conf": conf.reshape(-1).tolist()})
    iou = iou_per_class(conf_total)
    n = max(1, len(names))
    row = {"miou": miou(conf_total, classes), "acc": accuracy(conf_total),
           "eval_classes": ",".join(CLASSES[c] for c in classes),
           "steps_per_scene": float(np.mean(steps)) if steps else 0.0, "steps_total": int(np.sum(steps)),
           "adapt_s_per_scene": adapt_s / n, "infer_s_per_scene": infer_s / n,
           "teacher_s": fc.seconds if fc else 0.0, "teacher_cache_hits": fc.hits if fc else 0,
           "teacher_cache_misses": fc.misses if fc else 0, "train_s": ckpt["train_seconds"],
           "checkpoint_cache": ckpt["cache"], "peak_mem_mb": mem.peak_mb, "mem_kind": mem.kind}
    for c, name in enumerate(CLASSES):
        row[f"iou_{name}"] = float(iou[c]) if c in classes else float("nan")
    return row, scene_rows


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
