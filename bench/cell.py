"""One cell's protocol: a pure function of its resolved ``Cell`` (plus the caches) that returns rows.

(1) get the model from the checkpoint cache, training it if absent (``bench.models``); (2) hand the
method its clean source scenes once if it declares ``needs.source_scenes`` (``prepare``); (3) run the
method over the target stream in the protocol's order (segment after segment, shuffled, or by
dominant class), resetting before each scene when episodic and every ``reset_every`` scenes when
online, with the teacher features of each scene when the method needs them, and the forgetting probe
(clean source val scenes predicted without adapting, rows marked ``probe``, outside the main mIoU)
before the stream, every ``probe_every`` scenes and once at the end; (4) take each scene's prediction
(``predict = "after"``: a separate forward after adapting; ``"same"``: the logits of the method's last
adapting forward, or a separate forward where the method has none) and return one row per scene and
one row for the cell.

Every row has ``miou_3d`` (= ``miou``, the 3D prediction), ``miou_2d`` and ``miou_fused``. The last two are
NaN unless the method is multi-modal (its class declares ``last_output_2d``, the (N, C) 2D logits it
sets while adapting/predicting, NaN rows on points seen by no view): 2D mIoU counts the points seen by
a view only (unseen points have no 2D prediction and are left out, not counted wrong); fused averages
the 2D and 3D softmaxes on the seen points and keeps the 3D prediction on unseen ones, so it covers
every point as ``miou`` does (xMUDA's / MM-TTA's "2D+3D" ensemble).

Per scene (probe scenes too), on the scored points (labelled with one of the pair's evaluated
classes), a 15-bin equal-width histogram of the prediction's maximum softmax probability:
``calib_count`` (points per bin), ``calib_conf`` (their summed confidence) and ``calib_correct`` (how
many are predicted right); the cell row's ``ece`` is the expected calibration error of the pooled
histograms of the stream's scenes (sum over bins of |correct - confidence| / points). Each scene
row also holds ``pred_sample``: the predicted class (uint8 bytes) of ``PRED_SAMPLE`` points drawn
by a seed of the scene's dataset spec, name and point count, so two rows of one scene compare their
predictions on the same points (``bench.select.agreement``), and the label-free selection criteria
``crit_entropy``, ``crit_agreement``, ``crit_snd`` and ``crit_kd_loss`` (``bench.criteria``; computed
outside the timed parts, the cell row holds their means). A method with a ``scene_stats()``
method (returning a dict of floats after adapting a scene) gets a ``stat_KEY`` column per value in
its scene rows and their mean in its cell row.

Open-set cells (``holdout_classes``, ``bench.openset``): ``miou`` and ``miou_known`` score the known
classes only (held-out points are left out of the confusion matrices and calibration histograms); scene
and cell rows add ``auroc_unknown``, ``fpr95_unknown`` and ``n_unknown`` (unknown score 1 - MSP, the
cell's values over the pooled points of its stream), cell rows ``holdout_classes`` and ``unknown_score``.

Rows carry ``seed`` (the test stream's) and ``model_seed`` (the source model's), and
``reported_from``: empty, or for the row of an alias (``bench.grid``: the Oracle on the diagonal is
the Source-Only cell) the id of the cell whose numbers it reports (``alias_rows``).
"""

from __future__ import annotations

import copy
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
from bench.spec import DEFAULTS, Cell, order_stream, scene_order_key

log = logging.getLogger(__name__)

__all__ = ["run_cell", "error_row", "alias_rows", "calibration", "ece", "PeakMemory"]

CALIB_BINS = 15  # equal-width bins of the maximum softmax probability
PRED_SAMPLE = 128  # points per scene whose predicted class is kept (pred_sample)


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


def alias_rows(cell: Cell, row: dict, scenes: list[dict]) -> list[tuple[dict, list[dict]]]:
    """The (cell row, scene rows) of each alias of ``cell`` (``bench.grid``): ``cell``'s numbers under
    the alias's own id and configuration columns (label, role, ...), ``reported_from`` = ``cell``'s id."""
    return [({**row, **base_row(a)}, [{**r, "cell_id": a.cell_id} for r in scenes]) for a in cell.aliases]


def _finish(row: dict, cell: Cell, started: str, seconds: float) -> dict:
    row.update(base_row(cell))
    row.update(versions())
    row["started_at"] = started
    row["cell_seconds"] = seconds
    return row


def base_row(cell: Cell) -> dict:
    """The columns that describe a cell's configuration and protocol (every row has them), with the
    origin of its hyper-parameters (``bench.select.hp_columns``: selected, grid or default)."""
    from bench.roles import role
    from bench.selection import hp_columns

    return {
        "cell_id": cell.cell_id, "grid": cell.grid, "method": cell.method, "label": cell.label,
        "role": role(cell.method, cell.recipe, cell.train_on, cell.teacher["name"] if cell.teacher else None),
        "params": json.dumps(row_params(cell), sort_keys=True), "episodic": cell.episodic,
        "predict": cell.predict, "recipe": cell.recipe, "train_on": cell.train_on,
        "backbone": cell.backbone["name"], "backbone_cfg": json.dumps(cell.backbone, sort_keys=True),
        "teacher": _teacher_label(cell.teacher), "source": cell.source, "target": cell.target,
        "stream": json.dumps([s.to_dict() for s in cell.stream]), "n_segments": len(cell.stream),
        "seed": cell.seed, "model_seed": cell.model_seed, "reported_from": cell.alias_of,
        "n_train": cell.train_scenes, "n_test": cell.test_scenes,
        "source_scenes": cell.needs.source_scenes, "device": cell.device, "features": ",".join(cell.features),
        "train_cfg": json.dumps(cell.train_cfg, sort_keys=True),
        "views": str(cell.lift.views) if cell.teacher else "",
        "lift_tol": cell.lift.tol if cell.teacher else float("nan"),
        **hp_columns(cell),
        **protocol_columns(cell),
        **({"holdout_classes": ",".join(cell.holdout)} if cell.holdout else {}),
    }


def row_params(cell: Cell) -> dict:
    """The row's ``params``: the method's parameters, plus every cell setting that differs from its
    default (``views`` and ``lift_tol`` of a teacher-using cell, ``reset_every``): settings that the report
    must tell apart, as it tells parameters apart (rows that differ only in them were merged into one)."""
    extra: dict = {}
    if cell.teacher and cell.lift.views != DEFAULTS["views"]:
        extra["views"] = cell.lift.views
    if cell.teacher and cell.lift.tol != DEFAULTS["lift_tol"]:
        extra["lift_tol"] = cell.lift.tol
    if cell.protocol.reset_every:
        extra["reset_every"] = cell.protocol.reset_every
    return {**cell.params, **extra}


def protocol_columns(cell: Cell) -> dict:
    """The stream protocol's columns (scenario): scene order, periodic reset, forgetting probe."""
    p = cell.protocol
    return {"order": p.order, "order_seed": p.order_seed, "reset_every": p.reset_every,
            "probe_every": p.probe_every, "probe_scenes": p.probe_scenes if p.probe_every else 0}


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
    from bench.resources import data_key, dataset_for, feature_cache, load_scene, stream_names
    from methods import METHODS

    torch.manual_seed(cell.seed)
    device = cell.device
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise BenchError("device 'cuda' requested but CUDA is not available here; use --device cpu")
    model, ckpt = get_model(cell)
    source_model = copy.deepcopy(model).eval().requires_grad_(False)  # frozen: crit_agreement's reference
    method = METHODS.get(cell.method).factory(cfg=cell.method_cfg, model=model)
    # TTT-KD's own loss after adaptation (crit_kd_loss): methods that distil teacher features through the
    # model's distillation head and name their loss
    kd_kind = (getattr(cell.method_cfg, "loss", None) or getattr(cell.recipe_cfg, "kd_loss", "cosine")) \
        if cell.method_uses_teacher and cell.recipe_teacher and hasattr(cell.method_cfg, "loss") else None
    source = dataset_for(cell, cell.training_data())
    all_segments = stream_names(cell)
    segments = [s for s in all_segments if s[0] >= 0]
    probe = next((s for s in all_segments if s[0] < 0), None)
    for (_, ds, names), seg in zip(segments, cell.stream):
        if not names:
            raise BenchError(f"target {seg.dataset} ({seg.split} split): no scenes; check test_scenes / the "
                             "segment's scenes and the dataset's folder")
        ds.ensure(names, workers=torch.get_num_threads())
    if probe is not None:
        if not probe[2]:
            raise BenchError(f"forgetting probe: source {cell.source} has no val scenes; set probe_scenes >= 1 and "
                             "check the dataset's val split")
        probe[1].ensure(probe[2], workers=torch.get_num_threads())
    fc = feature_cache(cell) if cell.method_uses_teacher else None
    base_seed = int(cell.cell_id[:8], 16)
    conf_total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    datasets = {k: ds for k, ds, _ in segments}
    # Every row of a pair is scored on the classes its *nominal* source and the target share: the Oracle
    # (trained on the target) included, so that Oracle - Source-Only compares the same class set.
    pair_source = source if cell.training_data() == cell.source else dataset_for(cell, cell.source)
    seg_classes = {k: eval_classes(pair_source.classes, ds.classes) for k, ds in datasets.items()}
    held = cell.holdout_ids  # open-set mode (bench.openset): scored on the known classes, held-out points detected
    if held:
        seg_classes = {k: tuple(c for c in v if c not in held) for k, v in seg_classes.items()}
    unknown_pool: list[tuple[np.ndarray, np.ndarray]] = []
    conf_seg = {k: np.zeros_like(conf_total) for k in datasets}
    items = stream_order(cell, [(k, name) for k, _, names in segments for name in names], datasets, fc is not None)
    scene_rows, probe_rows, adapt_s, infer_s, prepare_s, steps, n_resets = [], [], 0.0, 0.0, 0.0, [], 0
    every = cell.protocol.reset_every
    multimodal = hasattr(type(method), "last_output_2d")
    conf_2d_total, conf_fused_total = np.zeros_like(conf_total), np.zeros_like(conf_total)
    scene_stats = getattr(method, "scene_stats", None)
    with PeakMemory(device) as mem:
        if cell.needs.source_scenes:
            src = dataset_for(cell, cell.source)
            names = src.scene_names("train", cell.needs.source_scenes)
            src.ensure(names, workers=torch.get_num_threads())
            t = time.perf_counter()
            inputs = [_scene_input(cell, load_scene(src, n, fc is not None), j, base_seed + 1_000_003 + j, fc,
                                   src, device) for j, n in enumerate(names)]
            for inp, n in zip(inputs, names):  # source labels (a probe trains on them); target scenes get none
                inp.label = torch.from_numpy(load_scene(src, n, fc is not None).label).to(device)
            method.prepare(inputs)
            prepare_s = time.perf_counter() - t
        for index, (k, name) in enumerate(items):
            if probe is not None and index % cell.protocol.probe_every == 0:
                probe_rows += _probe(cell, method, probe, index, base_seed, device)
            seg, target, classes = cell.stream[k], datasets[k], seg_classes[k]
            scene = load_scene(target, name, fc is not None)
            inp = _scene_input(cell, scene, index, base_seed + index, fc, target, device)
            reset = cell.episodic or (every > 0 and index > 0 and index % every == 0)
            if reset:
                method.reset()
                n_resets += not cell.episodic
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
            conf_seg[k] += conf
            conf_2d, conf_fused = (_modal_confusions(logits, method.last_output_2d, inp.teacher_mask, scene.label,
                                                     classes, conf) if multimodal else (None, None))
            if multimodal:
                conf_2d_total += conf_2d
                conf_fused_total += conf_fused
            adapt_s, infer_s = adapt_s + ta, infer_s + ti
            steps.append(n_steps)
            stats = {f"stat_{k}": float(v) for k, v in (scene_stats() or {}).items()} if callable(scene_stats) else {}
            if held:
                stats.update(_open_set(logits, scene.label, classes, held, unknown_pool))
            stats.update(_criteria(source_model, method.model, inp, logits, kd_kind, seg.dataset, name))
            stats["n_same_source"] = _same_as_source(pred, stats.pop("_source_pred"), scene.label, classes)
            row = {"cell_id": cell.cell_id, "scene": scene_key(cell, k, name), "index": index, "segment": k,
                   "dataset": seg.dataset, "split": seg.split, "n_points": scene.num_points,
                   "miou": miou(conf, classes), "miou_3d": miou(conf, classes),
                   "miou_2d": miou(conf_2d, classes) if multimodal else float("nan"),
                   "miou_fused": miou(conf_fused, classes) if multimodal else float("nan"),
                   "acc": accuracy(conf), "steps": n_steps, "adapt_s": ta,
                   "infer_s": ti, "predicted_by": used, "reset": bool(reset), "probe": False,
                   "conf": conf.reshape(-1).tolist(), **calibration(logits, scene.label, classes),
                   "pred_sample": pred_sample(pred, seg.dataset, name), **stats}
            for key, value in (getattr(scene, "diagnostics", None) or {}).items():
                row.setdefault(key if key not in row else f"diag_{key}", value)
            scene_rows.append(row)
        if probe is not None:  # a last probe after the whole stream
            probe_rows += _probe(cell, method, probe, len(items), base_seed, device)
    seg_rows = []
    for (k, _, names), seg in zip(segments, cell.stream):
        if conf_seg[k].sum() == 0:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            shared = ", ".join(CLASSES[c] for c in seg_classes[k]) or "none"
            raise BenchError(f"target {seg.dataset} ({seg.split} split, scenes {shown}): no point is labelled "
                             f"with a class that the source and target share ({shared}), so mIoU is undefined; "
                             "check the dataset's label files and class mapping")
        conf_total += conf_seg[k]
        seg_rows.append({"segment": k, "dataset": seg.dataset, "split": seg.split, "scenes": len(names),
                         "miou": miou(conf_seg[k], seg_classes[k])})
    classes = tuple(sorted(set().union(*seg_classes.values())))
    iou = iou_per_class(conf_total)
    stat_keys = dict.fromkeys(k for r in scene_rows for k in r if k.startswith(("stat_", "crit_")))
    stat_vals = {k: np.asarray([r.get(k, np.nan) for r in scene_rows], dtype=np.float64) for k in stat_keys}
    stat_means = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in stat_vals.items()}
    n = max(1, len(steps))
    row = {"miou": miou(conf_total, classes), "miou_3d": miou(conf_total, classes),
           "miou_2d": miou(conf_2d_total, classes) if multimodal else float("nan"),
           "miou_fused": miou(conf_fused_total, classes) if multimodal else float("nan"),
           "acc": accuracy(conf_total), "ece": ece(scene_rows),
           "eval_classes": ",".join(CLASSES[c] for c in classes),
           "data_key": data_key(cell),
           "steps_per_scene": float(np.mean(steps)) if steps else 0.0, "steps_total": int(np.sum(steps)),
           "adapt_s_per_scene": adapt_s / n, "infer_s_per_scene": infer_s / n, "prepare_s": prepare_s,
           "teacher_s": fc.seconds if fc else 0.0, "teacher_cache_hits": fc.hits if fc else 0,
           "teacher_cache_misses": fc.misses if fc else 0, "train_s": ckpt["train_seconds"],
           "checkpoint_cache": ckpt["cache"], "peak_mem_mb": mem.peak_mb, "mem_kind": mem.kind,
           "segments": json.dumps(seg_rows), "n_resets": n_resets, **_probe_summary(probe_rows, source.classes),
           **stat_means}
    if held:
        row.update(_open_set_summary(cell, row["miou"], unknown_pool))
    for c, name in enumerate(CLASSES):
        row[f"iou_{name}"] = float(iou[c]) if c in classes else float("nan")
    return row, scene_rows + probe_rows


def _criteria(source_model, model, inp, logits: torch.Tensor, kd_kind: str | None, dataset: str, name: str) -> dict:
    """A scene's label-free criterion columns (``bench.criteria``): entropy, agreement with the frozen
    source model's prediction, SND on a seeded point sample, and the distillation loss after adapting
    (``kd_kind``: the method's loss; None = not a TTT-KD cell, NaN)."""
    from bench.criteria import kd_loss, scene_criteria, scene_seed

    with torch.no_grad():
        source_logits = source_model(inp.batch)["seg"]
    kd = kd_loss(model, inp.batch, inp.teacher_feat, inp.teacher_mask, kd_kind) if kd_kind else float("nan")
    return {**scene_criteria(logits, source_logits, scene_seed(dataset, name, logits.shape[0]), kd),
            "_source_pred": source_logits.argmax(1).cpu().numpy()}


def _same_as_source(pred: np.ndarray, source_pred: np.ndarray, label: np.ndarray, classes) -> int:
    """``n_same_source``: how many of the scene's scored points (the confusion matrix's: labelled, of a scored
    class) the row predicts as the cell's model did before adapting (a frozen copy: Source-Only's model for the
    plain recipe, the joint model for TTT-KD / TTT-MAE) does; the report's inert rule reads it
    (identical predictions on >= 95 % of the scored points, ``bench.stats.inert``)."""
    label = np.asarray(label).reshape(-1)
    keep = np.zeros(NUM_CLASSES, dtype=bool)
    keep[list(classes)] = True
    valid = (label >= 0) & keep[np.clip(label, 0, NUM_CLASSES - 1)]
    return int((np.asarray(pred).reshape(-1)[valid] == np.asarray(source_pred).reshape(-1)[valid]).sum())


def _open_set(logits: torch.Tensor, label: np.ndarray, known: tuple[int, ...], held: tuple[int, ...],
              pool: list) -> dict:
    """A scene's open-set columns (``bench.openset.detection``: AUROC and FPR at 95 % TPR of the unknown
    score 1 - MSP, points of a held-out class against points of a known class); the scene's scored points
    (maximum softmax probability, is-unknown) are appended to ``pool`` for the cell's pooled values."""
    from bench.openset import detection

    lab = np.asarray(label).reshape(-1)
    msp = torch.softmax(logits.detach().double(), 1).max(1).values.cpu().numpy()
    keep = np.isin(lab, held) | np.isin(lab, known)
    pool.append((msp[keep], np.isin(lab[keep], held)))
    return detection(msp, lab, known, held)


def _open_set_summary(cell: Cell, known_miou: float, pool: list) -> dict:
    """The cell row's open-set columns: the held-out classes, the score, known-class mIoU (= ``miou``)
    and the detection values over the pooled points of the stream."""
    from bench.openset import SCORE, auroc, fpr_at_tpr, unknown_score

    msp = np.concatenate([m for m, _ in pool]) if pool else np.zeros(0)
    unknown = np.concatenate([u for _, u in pool]) if pool else np.zeros(0, bool)
    score = unknown_score(msp)
    return {"holdout_classes": ",".join(cell.holdout), "unknown_score": SCORE, "miou_known": known_miou,
            "auroc_unknown": auroc(score, unknown), "fpr95_unknown": fpr_at_tpr(score, unknown),
            "n_unknown": int(unknown.sum())}


def scene_key(cell: Cell, k: int, name: str) -> str:
    """A scene row's ``scene``: its name, prefixed by its segment's dataset spec in a stream of several
    segments (so it is unique in the cell: the report pairs cells scene by scene)."""
    return name if len(cell.stream) == 1 else f"{cell.stream[k].dataset}/{name}"


def stream_order(cell: Cell, items: list[tuple[int, str]], datasets: dict, with_views: bool) -> list[tuple[int, str]]:
    """The (segment, scene) pairs of the stream in the cell's order ("by_class" reads each scene's
    labels once, before the stream runs, to sort by ``scene_order_key``)."""
    from bench.resources import load_scene

    key = None
    if cell.protocol.order == "by_class":
        keys = {it: scene_order_key(load_scene(datasets[it[0]], it[1], with_views)) for it in items}
        key = keys.__getitem__
    return order_stream(items, cell.protocol.order, cell.protocol.order_seed, key)


def _probe(cell: Cell, method, probe, position: int, base_seed: int, device: str) -> list[dict]:
    """The forgetting probe at stream ``position`` (target scenes adapted so far): the method's
    prediction on each clean source val scene, without adapting; the model's weights and buffers are
    restored afterwards, so the probe never changes the stream's numbers. An episodic method is
    reset first (it starts every scene from the source model anyway)."""
    from bench.resources import load_scene

    _, src, names = probe
    classes = tuple(src.classes)
    if cell.episodic:
        method.reset()
    saved = copy.deepcopy(method.model.state_dict())
    rows = []
    for j, name in enumerate(names):
        scene = load_scene(src, name, False)  # predictions never read teacher features
        inp = _scene_input(cell, scene, position, base_seed + 2_000_003 + 1_009 * position + j, None, src, device)
        logits = method.predict(inp)
        pred = logits.argmax(1).cpu().numpy()
        conf = confusion(pred, scene.label, NUM_CLASSES, classes)
        rows.append({"cell_id": cell.cell_id, "scene": f"probe@{position}/{name}", "index": position, "segment": -1,
                     "dataset": cell.source, "split": "val", "n_points": scene.num_points, "miou": miou(conf, classes),
                     "acc": accuracy(conf), "steps": 0, "adapt_s": 0.0, "infer_s": 0.0, "predicted_by": "after",
                     "reset": False, "probe": True, "conf": conf.reshape(-1).tolist(),
                     **calibration(logits, scene.label, classes), "pred_sample": pred_sample(pred, cell.source, name)})
    method.model.load_state_dict(saved)
    return rows


def calibration(logits: torch.Tensor, label: np.ndarray, classes) -> dict[str, list]:
    """A scene's calibration histogram on its scored points (labelled with one of ``classes``):
    ``CALIB_BINS`` equal-width bins of the maximum softmax probability (computed in float64), per bin
    the number of points (``calib_count``), their summed confidence (``calib_conf``) and how many the
    argmax predicts right (``calib_correct``)."""
    lab = np.asarray(label).reshape(-1)
    keep = np.zeros(NUM_CLASSES, dtype=bool)
    keep[list(classes)] = True
    scored = (lab >= 0) & keep[np.clip(lab, 0, NUM_CLASSES - 1)]
    prob = torch.softmax(logits.detach()[torch.from_numpy(scored).to(logits.device)].double(), 1).cpu()
    top, pred = prob.max(1)
    top, pred = top.numpy(), pred.numpy()
    b = np.minimum((top * CALIB_BINS).astype(np.int64), CALIB_BINS - 1)
    right = (pred == lab[scored]).astype(np.float64)
    return {"calib_count": np.bincount(b, minlength=CALIB_BINS).astype(np.int64).tolist(),
            "calib_conf": np.bincount(b, weights=top, minlength=CALIB_BINS).tolist(),
            "calib_correct": np.bincount(b, weights=right, minlength=CALIB_BINS).round().astype(np.int64).tolist()}


def ece(rows: list[dict]) -> float:
    """Expected calibration error of the pooled histograms of ``rows`` (``calibration``): the sum over
    bins of |correct - summed confidence| divided by the number of points; NaN without points."""
    if not rows:
        return float("nan")
    count = np.sum([r["calib_count"] for r in rows], axis=0, dtype=np.float64)
    conf = np.sum([r["calib_conf"] for r in rows], axis=0, dtype=np.float64)
    right = np.sum([r["calib_correct"] for r in rows], axis=0, dtype=np.float64)
    n = count.sum()
    return float(np.abs(right - conf).sum() / n) if n else float("nan")


def pred_sample(pred: np.ndarray, dataset: str, name: str) -> bytes:
    """The predicted class of ``PRED_SAMPLE`` points of a scene (all of a smaller scene), as uint8
    bytes; the points are drawn (sorted, without replacement) by a seed of the scene's dataset spec,
    name and point count, so every row of the same scene samples the same points."""
    from bench.cache import stable_hash

    n = len(pred)
    rng = np.random.default_rng(int(stable_hash([dataset, name, n], 8), 16))
    idx = np.sort(rng.choice(n, size=min(PRED_SAMPLE, n), replace=False))
    return np.asarray(pred)[idx].astype(np.uint8).tobytes()


def _probe_summary(rows: list[dict], classes) -> dict:
    """Cell columns of the forgetting probe: probe mIoU per position (each over its scenes' summed
    confusion), first and last, and forgetting = first - last (NaN without a probe)."""
    if not rows:
        return {"probe_miou_first": float("nan"), "probe_miou_last": float("nan"), "forgetting": float("nan"),
                "probe_curve": "[]"}
    curve = []
    for pos in sorted({r["index"] for r in rows}):
        conf = sum(np.asarray(r["conf"]).reshape(NUM_CLASSES, NUM_CLASSES) for r in rows if r["index"] == pos)
        curve.append({"position": pos, "miou": miou(conf, tuple(classes))})
    first, last = curve[0]["miou"], curve[-1]["miou"]
    return {"probe_miou_first": first, "probe_miou_last": last, "forgetting": first - last,
            "probe_curve": json.dumps(curve)}


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
