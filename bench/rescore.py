"""Results tables scored again by the current rule: cell and scene mIoU (and per-class IoU, class-group
mIoU, pooled calibration error) recomputed from the stored per-scene confusion matrices and calibration
histograms with ``bench.metrics``, so results written under an earlier scoring rule read the same as new
ones. Used by the report and by ``bench compare``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.metrics import ece, iou_per_class, miou


def check_histogram(count: np.ndarray, conf_sum: np.ndarray, correct: np.ndarray, where: str) -> None:
    """The calibration histogram contract: equal-width bins over [0, 1]; per bin the number of points,
    the *sum* of their maximum softmax probabilities (between count x lower edge and count x upper
    edge) and the number predicted right (at most count). A BenchError naming ``where`` otherwise."""
    count, conf_sum, correct = (np.asarray(x, dtype=np.float64) for x in (count, conf_sum, correct))
    k = len(count)
    edges = np.linspace(0.0, 1.0, k + 1)
    tol = 1e-3 * np.maximum(count, 1.0)
    if not (len(conf_sum) == len(correct) == k) or (count < 0).any() or (correct > count + 1e-9).any() \
            or (conf_sum < count * edges[:-1] - tol).any() or (conf_sum > count * edges[1:] + tol).any():
        raise BenchError(f"{where}: calibration histograms (calib_count, calib_conf, calib_correct) are not per-bin "
                         f"point counts, confidence sums and correct counts over {k} equal-width bins of [0, 1]; "
                         "re-run the cell with a version that writes them so")


def scene_confs(scenes: pd.DataFrame, num_classes: int) -> np.ndarray:
    """(n, C, C) confusion matrices of scene rows (their flattened ``conf`` lists)."""
    if scenes.empty:
        return np.zeros((0, num_classes, num_classes), dtype=np.int64)
    return np.stack([np.asarray(c, dtype=np.int64).reshape(num_classes, num_classes) for c in scenes["conf"]])


def rescore(cells: pd.DataFrame, scenes: pd.DataFrame, class_names: tuple[str, ...],
            groups: dict[str, tuple[int, ...]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cells and scenes with mIoU recomputed from the per-scene confusion matrices by the current
    scoring rule (``bench.metrics``): per scene ``miou`` (and ``miou_3d``, the same 3D prediction);
    per cell with target scenes (probe rows left out) ``miou``, ``miou_3d``, ``iou_<class>`` from the
    summed matrices, ``miou_<group>`` for each named class group, the value the cell recorded in
    ``miou_recorded``, and ``ece`` pooled from the scenes' calibration histograms (``calib_count``,
    ``calib_conf``, ``calib_correct``) where they have them. Cells without scene rows keep their
    recorded values (their group columns from their ``iou_<class>`` columns)."""
    c = len(class_names)
    cells = cells.copy()
    cells["miou_recorded"] = cells["miou"] if "miou" in cells else np.nan
    for g in groups or {}:
        cells[f"miou_{g}"] = np.nan
    if "ece" not in cells:
        cells["ece"] = np.nan
    if scenes is None or scenes.empty or "conf" not in scenes:
        for g, ids in (groups or {}).items():
            cols = [f"iou_{class_names[i]}" for i in ids if f"iou_{class_names[i]}" in cells]
            if cols:
                cells[f"miou_{g}"] = cells[cols].astype(float).mean(axis=1, skipna=True)
        return cells, scenes
    scenes = scenes.copy()
    confs = scene_confs(scenes, c)
    scenes["miou"] = [miou(x) for x in confs]
    if "miou_3d" in scenes or "miou_3d" in cells:
        scenes["miou_3d"] = scenes["miou"]
    target = ~scenes["probe"].fillna(False).astype(bool).to_numpy() if "probe" in scenes else np.ones(len(scenes), bool)
    calib = all(k in scenes for k in ("calib_count", "calib_conf", "calib_correct"))
    pos = pd.Series(np.arange(len(scenes)))[target].groupby(scenes["cell_id"].to_numpy()[target]).indices
    order = np.flatnonzero(target)
    for i, cid in zip(cells.index, cells["cell_id"]):
        if cid not in pos:
            continue
        idx = order[pos[cid]]
        total = confs[idx].sum(0)
        cells.at[i, "miou"] = miou(total)
        if "miou_3d" in cells:
            cells.at[i, "miou_3d"] = miou(total)
        iou = iou_per_class(total)
        for k, name in enumerate(class_names):
            if f"iou_{name}" in cells:
                cells.at[i, f"iou_{name}"] = float(iou[k])
        for g, ids in (groups or {}).items():
            cells.at[i, f"miou_{g}"] = miou(total, ids)
        if calib:
            part = scenes.iloc[idx]
            hist = [np.sum([np.asarray(v, dtype=np.float64) for v in part[k]], 0)
                    for k in ("calib_count", "calib_conf", "calib_correct")]
            check_histogram(*hist, where=f"cell {cid}")
            cells.at[i, "ece"] = ece(*hist)
    return cells, scenes
