"""One cell's protocol: a pure function of its resolved ``Cell`` (plus the caches) that returns rows.

(1) get the model from the checkpoint cache, training it if absent (``bench.models``); (2) hand the
method its clean source scenes once if it declares ``needs.source_scenes`` (``prepare``); (3) run the
method over the target stream, segment after segment (reset before each scene when episodic), with
the teacher features of each scene when the method needs them; (4) take each scene's prediction
(``predict = "after"``: a separate forward after adapting; ``"same"``: the logits of the method's last
adapting forward, or a separate forward where the method has none) and return one row per scene and
one row for the cell.

Every row has ``miou_3d`` (= ``miou``, the 3D prediction), ``miou_2d`` and ``miou_fused``. The last two are
NaN unless the method is multi-modal (its class declares ``last_output_2d``, the (N, C) 2D logits it
sets while adapting/predicting, NaN rows on points seen by no view): 2D mIoU counts the points seen by
a view only (unseen points have no 2D prediction and are left out, not counted wrong); fused averages
the 2D and 3D softmaxes on the seen points and keeps the 3D prediction on unseen ones, so it covers
every point as ``miou`` does (xMUDA's / MM-TTA's "2D+3D" ensemble).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from datetime import UTC, datetime

import numpy as np
import torch

from bench.data.classes import CLASSES, NUM_CLASSES, eval_classes
from bench.env import versions
from bench.errors import BenchError
from bench.memory import PeakMemory
from bench.metrics import accuracy, confusion, iou_per_class, miou
from bench.spec import Cell

log = logging.getLogger(__name__)

__all__ = ["run_cell", "error_row", "PeakMemory"]


def run_cell(cell: Cell | dict) -> tuple[dict, list[dict]]:
    """Run one cell (a Cell or its plain form); never raises: a failure becomes a row with
    status='error' and the message."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    try:
        cell = cell if isinstance(cell, Cell) else Cell.from_dict(cell)
    except BenchError as e:
        from bench.spec import cell_id

        return {"cell_id": cell.get("cell_id") or cell_id(cell), "status": "error", "error": str(e),
                "started_at": started, "cell_seconds": time.perf_counter() - t0, **versions()}, []
    try:
        row, scenes = _run(cell)
        row["status"], row["error"] = "ok", ""
    except Exception as e:  # noqa: BLE001 - recorded, the grid goes on
        log.debug("cell %s failed:\n%s", cell.cell_id, traceback.format_exc())
        msg = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
        row, scenes = {"status": "error", "error": msg}, []
    return _finish(row, cell, started, time.perf_counter() - t0), scenes


def error_row(cell: Cell, message: str) -> dict:
    """The row of a cell that could not run at all (e.g. its worker process was killed)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return _finish({"status": "error", "error": message}, cell, started, 0.0)


def _finish(row: dict, cell: Cell, started: str, seconds: float) -> dict:
    row.update(base_row(cell))
    row.update(versions())
    row["started_at"] = started
    row["cell_seconds"] = seconds
    return row


def base_row(cell: Cell) -> dict:
    """The columns that describe a cell's configuration and protocol (every row has them)."""
    from bench.roles import role

    return {
        "cell_id": cell.cell_id, "grid": cell.grid, "method": cell.method, "label": cell.label,
        "role": role(cell.method, cell.recipe, cell.train_on, cell.teacher["name"] if cell.teacher else None),
        "params": json.dumps(cell.params, sort_keys=True), "episodic": cell.episodic,
        "predict": cell.predict, "recipe": cell.recipe, "train_on": cell.train_on,
        "backbone": cell.backbone["name"], "backbone_cfg": json.dumps(cell.backbone, sort_keys=True),
        "teacher": _teacher_label(cell.teacher), "source": cell.source, "target": cell.target,
        "stream": json.dumps([s.to_dict() for s in cell.stream]), "n_segments": len(cell.stream),
        "seed": cell.seed, "n_train": cell.train_scenes, "n_test": cell.test_scenes,
        "source_scenes": cell.needs.source_scenes, "device": cell.device, "features": ",".join(cell.features),
        "train_cfg": json.dumps(cell.train_cfg, sort_keys=True),
        "views": str(cell.lift.views) if cell.teacher else "",
        "lift_tol": cell.lift.tol if cell.teacher else float("nan"),
    }


def _teacher_label(t: dict | None) -> str:
    if not t:
        return ""
    extra = ",".join(f"{k}={v}" for k, v in sorted(t.items()) if k not in ("name", "weights", "device"))
    label = t["name"] + (f"({extra})" if extra else "")
    return label + (" [random-init]" if t.get("weights") == "random-init" else "")


def _scene_input(cell: Cell, scene, index: int, seed: int, fc, ds, device: str):
    from backbones.batch import make_batch
    from methods.base import SceneInput

    g = torch.Generator().manual_seed(seed)
    inp = SceneInput(make_batch([scene], cell.features).to(device), index, g)
    if fc is not None:
        feat, mask = fc.get(ds.fingerprint(), scene)
        inp.teacher_feat = torch.from_numpy(feat).to(device)
        inp.teacher_mask = torch.from_numpy(mask).to(device)
    return inp


def _run(cell: Cell) -> tuple[dict, list[dict]]:
    from bench.models import get_model
    from bench.resources import dataset_for, feature_cache, load_scene, stream_names
    from methods import METHODS

    torch.manual_seed(cell.seed)
    device = cell.device
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise BenchError("device 'cuda' requested but CUDA is not available here; use --device cpu")
    model, ckpt = get_model(cell)
    method = METHODS.get(cell.method).factory(cfg=cell.method_cfg, model=model)
    source = dataset_for(cell, cell.training_data())
    segments = stream_names(cell)
    for (_, ds, names), seg in zip(segments, cell.stream):
        if not names:
            raise BenchError(f"target {seg.dataset} ({seg.split} split): no scenes; check test_scenes / the "
                             "segment's scenes and the dataset's folder")
        ds.ensure(names, workers=torch.get_num_threads())
    fc = feature_cache(cell) if cell.method_uses_teacher else None
    base_seed = int(cell.cell_id[:8], 16)
    conf_total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    all_classes: set[int] = set()
    scene_rows, seg_rows, adapt_s, infer_s, prepare_s, steps = [], [], 0.0, 0.0, 0.0, []
    multimodal = hasattr(type(method), "last_output_2d")
    conf_2d_total, conf_fused_total = np.zeros_like(conf_total), np.zeros_like(conf_total)
    with PeakMemory(device) as mem:
        if cell.needs.source_scenes:
            src = dataset_for(cell, cell.source)
            names = src.scene_names("train", cell.needs.source_scenes)
            src.ensure(names, workers=torch.get_num_threads())
            t = time.perf_counter()
            inputs = [_scene_input(cell, load_scene(src, n, fc is not None), j, base_seed + 1_000_003 + j, fc,
                                   src, device) for j, n in enumerate(names)]
            method.prepare(inputs)
            prepare_s = time.perf_counter() - t
        index = 0
        for (k, target, names), seg in zip(segments, cell.stream):
            classes = eval_classes(source.classes, target.classes)
            all_classes.update(classes)
            conf_seg = np.zeros_like(conf_total)
            for name in names:
                scene = load_scene(target, name, fc is not None)
                inp = _scene_input(cell, scene, index, base_seed + index, fc, target, device)
                if cell.episodic:
                    method.reset()
                method.last_output = None
                if multimodal:
                    method.last_output_2d = None
                t = time.perf_counter()
                n_steps = method.adapt(inp)
                _sync(device)
                ta = time.perf_counter() - t
                t = time.perf_counter()
                if cell.predict == "same" and method.last_output is not None:
                    logits, used = method.last_output, "same"
                else:
                    logits, used = method.predict(inp), "after"
                pred = logits.argmax(1).cpu().numpy()
                _sync(device)
                ti = time.perf_counter() - t
                conf = confusion(pred, scene.label, NUM_CLASSES, classes)
                conf_seg += conf
                conf_2d, conf_fused = (_modal_confusions(logits, method.last_output_2d, inp.teacher_mask, scene.label,
                                                         classes, conf) if multimodal else (None, None))
                if multimodal:
                    conf_2d_total += conf_2d
                    conf_fused_total += conf_fused
                adapt_s, infer_s = adapt_s + ta, infer_s + ti
                steps.append(n_steps)
                row = {"cell_id": cell.cell_id, "scene": name, "index": index, "segment": k,
                       "dataset": seg.dataset, "split": seg.split, "n_points": scene.num_points,
                       "miou": miou(conf, classes), "miou_3d": miou(conf, classes),
                       "miou_2d": miou(conf_2d, classes) if multimodal else float("nan"),
                       "miou_fused": miou(conf_fused, classes) if multimodal else float("nan"),
                       "acc": accuracy(conf), "steps": n_steps, "adapt_s": ta,
                       "infer_s": ti, "predicted_by": used, "conf": conf.reshape(-1).tolist()}
                for key, value in (getattr(scene, "diagnostics", None) or {}).items():
                    row.setdefault(key if key not in row else f"diag_{key}", value)
                scene_rows.append(row)
                index += 1
            if conf_seg.sum() == 0:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                shared = ", ".join(CLASSES[c] for c in classes) or "none"
                raise BenchError(f"target {seg.dataset} ({seg.split} split, scenes {shown}): no point is labelled "
                                 f"with a class that the source and target share ({shared}), so mIoU is undefined; "
                                 "check the dataset's label files and class mapping")
            conf_total += conf_seg
            seg_rows.append({"segment": k, "dataset": seg.dataset, "split": seg.split, "scenes": len(names),
                             "miou": miou(conf_seg, classes)})
    classes = tuple(sorted(all_classes))
    iou = iou_per_class(conf_total)
    n = max(1, len(steps))
    row = {"miou": miou(conf_total, classes), "miou_3d": miou(conf_total, classes),
           "miou_2d": miou(conf_2d_total, classes) if multimodal else float("nan"),
           "miou_fused": miou(conf_fused_total, classes) if multimodal else float("nan"),
           "acc": accuracy(conf_total),
           "eval_classes": ",".join(CLASSES[c] for c in classes),
           "steps_per_scene": float(np.mean(steps)) if steps else 0.0, "steps_total": int(np.sum(steps)),
           "adapt_s_per_scene": adapt_s / n, "infer_s_per_scene": infer_s / n, "prepare_s": prepare_s,
           "teacher_s": fc.seconds if fc else 0.0, "teacher_cache_hits": fc.hits if fc else 0,
           "teacher_cache_misses": fc.misses if fc else 0, "train_s": ckpt["train_seconds"],
           "checkpoint_cache": ckpt["cache"], "peak_mem_mb": mem.peak_mb, "mem_kind": mem.kind,
           "segments": json.dumps(seg_rows)}
    for c, name in enumerate(CLASSES):
        row[f"iou_{name}"] = float(iou[c]) if c in classes else float("nan")
    return row, scene_rows


def _modal_confusions(logits: torch.Tensor, logits_2d: torch.Tensor | None, mask: torch.Tensor | None,
                      label: np.ndarray, classes, conf_3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2D confusion on the seen points, fused confusion on all points) of a multi-modal prediction; a
    scene without 2D logits (no point seen) adds nothing to 2D and its 3D confusion to fused."""
    if logits_2d is None or mask is None or not bool(mask.any()):
        return np.zeros_like(conf_3d), conf_3d
    seen = mask.cpu().numpy()
    p2 = logits_2d[mask].softmax(1)
    fused = logits.softmax(1)
    fused[mask] = (fused[mask] + p2) / 2
    conf_2d = confusion(p2.argmax(1).cpu().numpy(), label[seen], NUM_CLASSES, classes)
    return conf_2d, confusion(fused.argmax(1).cpu().numpy(), label, NUM_CLASSES, classes)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
