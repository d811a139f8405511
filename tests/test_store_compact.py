"""Compact reference storage (issue 27): a reference folder keeps zstd parquet tables without cells.csv
and without the scene columns the confusion matrices determine; readers (report, compare) see the same
rows as from a run folder, and an existing folder can be compacted in place."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rich.console import Console

from bench.compare import compare
from bench.data.classes import NUM_CLASSES
from bench.metrics import accuracy, miou
from bench.report import Results, column_stats, main_table
from bench.store import DERIVED, ResultsStore, compact


def _rows(cid: str, rng: np.random.Generator, n: int = 5) -> tuple[dict, list[dict]]:
    scenes = []
    for i in range(n):
        conf = rng.integers(0, 30, size=(NUM_CLASSES, NUM_CLASSES))
        conf[3] = 0  # a class without ground truth in this scene
        scenes.append({"cell_id": cid, "scene": f"test_{i:04d}", "index": i, "probe": False, "adapt_s": 0.01 * i,
                       "miou": miou(conf), "miou_3d": miou(conf), "acc": accuracy(conf),
                       "conf": conf.reshape(-1).tolist()})
    total = np.sum([np.asarray(s["conf"]).reshape(NUM_CLASSES, NUM_CLASSES) for s in scenes], 0)
    label, method = ("Source-Only", "source") if cid.startswith("s") else ("TENT", "tent")
    cell = {"cell_id": cid, "status": "ok", "error": "", "miou": miou(total), "label": label, "method": method,
            "params": json.dumps({}), "recipe": "source", "train_on": "source", "teacher": "", "backbone": "spunet",
            "source": "a", "target": "b", "seed": int(cid[-1]), "n_test": n, "eval_classes": "",
            "adapt_s_per_scene": 0.1, "infer_s_per_scene": 0.1}
    return cell, scenes


def _fill(store: ResultsStore, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with store.lock():
        for cid in ("s0", "s1", "t0", "t1"):
            store.append(*_rows(cid, rng))


def test_a_reference_is_written_compactly_and_reads_like_a_run(tmp_path):
    run, ref = ResultsStore(tmp_path / "run"), ResultsStore(tmp_path / "ref", reference=True)
    _fill(run)
    _fill(ref)
    assert (run.out / "cells.csv").is_file() and not (ref.out / "cells.csv").exists()
    for name in ("cells.parquet", "scenes.parquet"):
        meta = pq.ParquetFile(ref.out / name).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
    raw = pd.read_parquet(ref.out / "scenes.parquet")
    assert not set(DERIVED) & set(raw.columns) and "adapt_s" in raw  # measurements are kept
    a, b = run.scenes(), ref.scenes()
    pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)], check_like=True)
    pd.testing.assert_frame_equal(run.cells(), ref.cells())


def test_compacting_an_existing_folder_changes_no_number_of_the_report_or_compare(tmp_path):
    old = ResultsStore(tmp_path / "old")
    _fill(old, seed=1)
    before = main_table(res := Results.from_frames(old.cells(), old.scenes()), column_stats(res, n_boot=50))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("cells.parquet", "cells.csv", "scenes.parquet"):
        (copy / name).write_bytes((old.out / name).read_bytes())
    size_before, size_after = compact(copy)
    assert size_after < size_before and not (copy / "cells.csv").exists()
    new = ResultsStore(copy)
    after = main_table(res2 := Results.from_frames(new.cells(), new.scenes()), column_stats(res2, n_boot=50))
    assert after.rows == before.rows and after.caption == before.caption
    assert compare(old.out, copy, Console(record=True, width=200)) == 0


def test_a_reference_run_into_an_old_layout_folder_drops_its_stale_csv(tmp_path):
    run = ResultsStore(tmp_path / "ref")
    _fill(run)
    ref = ResultsStore(tmp_path / "ref", reference=True)
    rng = np.random.default_rng(5)
    with ref.lock():
        ref.append(*_rows("t2", rng))
    assert not (ref.out / "cells.csv").exists() and len(ref.cells()) == 5
    assert set(DERIVED) <= set(ref.scenes().columns) and not set(DERIVED) & set(pd.read_parquet(ref.scenes_path))


def test_bench_world_reads_the_bn_share_from_a_compact_reference(tmp_path):
    from bench.world import bn_share

    rows = [{"label": lab, "source": "synth-scannet", "target": "synth-s3dis", "miou": m, "seed": 0}
            for lab, m in (("Source-Only", 0.2), ("BN-Adapt", 0.3), ("Oracle", 0.6))]
    pd.DataFrame(rows).to_parquet(tmp_path / "cells.parquet", compression="zstd")
    (share,) = bn_share(tmp_path)
    assert abs(share["bn_share"] - 0.25) < 1e-9
