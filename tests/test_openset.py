"""Open-set mode (issue 30 item 9): held-out classes never reach the training loss, they are part of the
model identity, AUROC / FPR95 of the unknown score against hand-computed values, the columns of a tiny run."""

import numpy as np
import pandas as pd
import pytest
import test_breadth_scenarios  # registers the brd-* datasets
from toy_datasets import PlaneDataset

from bench.data.classes import CLASS_ID
from bench.errors import BenchError
from bench.grid import load_grid
from bench.openset import auroc, detection, fpr_at_tpr, hold_out, parse_holdout


def test_auroc_and_fpr95_by_hand():
    # unknown (positive) scores 0.9, 0.8, 0.4; known 0.7, 0.5, 0.4, 0.1
    score = np.array([0.9, 0.8, 0.4, 0.7, 0.5, 0.4, 0.1])
    pos = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    # pairs (pos > neg): 0.9 beats 4, 0.8 beats 4, 0.4 beats 0.1 and ties 0.4 (half): 4 + 4 + 1.5 = 9.5 of 12
    assert auroc(score, pos) == pytest.approx(9.5 / 12)
    # TPR >= 95 % of 3 positives needs all 3: threshold 0.4; known with score >= 0.4: 0.7, 0.5, 0.4 -> 3/4
    assert fpr_at_tpr(score, pos) == pytest.approx(0.75)
    # a perfect score: AUROC 1, FPR95 0; an inverted one: AUROC 0, FPR95 1
    assert auroc(np.array([3.0, 2, 1, 0]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert fpr_at_tpr(np.array([3.0, 2, 1, 0]), np.array([1, 1, 0, 0], bool)) == 0.0
    assert auroc(np.array([0.0, 1, 2, 3]), np.array([1, 1, 0, 0], bool)) == 0.0
    assert fpr_at_tpr(np.array([0.0, 1, 2, 3]), np.array([1, 1, 0, 0], bool)) == 1.0
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([0, 0], bool)))
    assert np.isnan(fpr_at_tpr(np.array([0.1, 0.2]), np.array([1, 1], bool)))


def test_auroc_matches_sklearn_where_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    score = np.round(rng.random(500), 2)  # rounded: many ties
    pos = rng.random(500) < 0.3
    assert auroc(score, pos) == pytest.approx(metrics.roc_auc_score(pos, score))


def test_detection_uses_one_minus_msp_and_leaves_other_points_out():
    known, held = (0, 1), (5,)
    label = np.array([5, 5, 0, 1, -1, 7])
    msp = np.array([0.2, 0.4, 0.9, 0.3, 0.0, 0.0])  # unknown score 1 - msp: 0.8, 0.6 | 0.1, 0.7
    d = detection(msp, label, known, held)
    assert d["n_unknown"] == 2
    assert d["auroc_unknown"] == pytest.approx(auroc(np.array([0.8, 0.6, 0.1, 0.7]), np.array([1, 1, 0, 0], bool)))
    assert d["auroc_unknown"] == pytest.approx(3 / 4)
    assert d["fpr95_unknown"] == pytest.approx(0.5)  # threshold 0.6: known 0.7 flagged, 0.1 not


def test_holdout_parsing_errors():
    assert parse_holdout(["table", "chair"], "g") == ("chair", "table")  # class-id order
    assert parse_holdout(None, "g") == ()
    with pytest.raises(BenchError, match="unknown class.*'couch'.*valid: wall"):
        parse_holdout(["couch"], "g")
    with pytest.raises(BenchError, match="list of class names"):
        parse_holdout("sofa", "g")
    with pytest.raises(BenchError, match="twice"):
        parse_holdout(["sofa", "sofa"], "g")
    assert (hold_out(np.array([0, 5, 3, -1, 5]), (5,)) == [0, -1, 3, -1, -1]).all()


HEAD = """
name = "brd-open"
backbones = [{ name = "spunet", channels = [8, 16], voxel_size = 0.2 }]
train_scenes = 2
val_scenes = 1
test_scenes = 2
train = { epochs = 1 }
selected = "none"
pairs = ["brd-a->brd-b"]
[[methods]]
name = "source"
label = "Source-Only"
[[methods]]
name = "tent"
label = "TENT"
"""


def _grid(tmp_path, text, name="brd-open"):
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return load_grid(str(p))


def test_holdout_is_part_of_the_model_identity_only_when_set(tmp_path):
    plain = _grid(tmp_path, HEAD, "plain").cells
    held = _grid(tmp_path, 'holdout_classes = ["chair"]\n' + HEAD, "held").cells
    assert "holdout" not in plain[0].model_identity()
    assert held[0].model_identity()["holdout"] == ["chair"] and held[0].holdout_ids == (CLASS_ID["chair"],)
    assert {c.model_key() for c in plain}.isdisjoint({c.model_key() for c in held})
    assert {c.cell_id for c in plain}.isdisjoint({c.cell_id for c in held})
    with pytest.raises(BenchError, match="holdout_classes: unknown class"):
        _grid(tmp_path, 'holdout_classes = ["couch"]\n' + HEAD, "bad")


def test_held_out_class_never_in_training_targets_and_columns(tmp_path, monkeypatch):
    """A tiny open-set run: every label the training loss sees lacks the held-out class (while the
    training scenes have it), and the rows carry the open-set columns."""
    import backbones.train as T
    from bench.runner import run_grid

    seen = []
    loss = T.segmentation_loss

    def recording(logits, step, cfg):
        seen.append(step.label.cpu().numpy().copy())
        return loss(logits, step, cfg)

    monkeypatch.setattr(T, "segmentation_loss", recording)
    held = CLASS_ID["table"]
    ds = PlaneDataset("brd-a", 0.0, test_breadth_scenarios.BRD_OBJECTS)
    assert any((ds.load(n).label == held).any() for n in ds.scene_names("train", 2))  # the source has tables
    g = _grid(tmp_path, 'holdout_classes = ["table"]\n' + HEAD)
    run_grid(g, tmp_path / "out")
    assert seen and all(not (lab == held).any() for lab in seen)
    assert any((lab == -1).any() for lab in seen)
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    scenes = pd.read_parquet(tmp_path / "out" / "scenes.parquet")
    assert (cells["status"] == "ok").all(), cells["error"].tolist()
    for k in ("auroc_unknown", "fpr95_unknown", "n_unknown", "miou_known"):
        assert k in cells
    assert (cells["holdout_classes"] == "table").all() and (cells["unknown_score"] == "1 - MSP").all()
    assert (cells["miou_known"] == cells["miou"]).all() and (cells["n_unknown"] > 0).all()
    assert cells["auroc_unknown"].between(0, 1).all() and cells["fpr95_unknown"].between(0, 1).all()
    assert "table" not in ",".join(cells["eval_classes"])
    assert {"auroc_unknown", "fpr95_unknown", "n_unknown"} <= set(scenes.columns)
    # every row also carries the label-free criteria (bench.criteria)
    for k in ("crit_entropy", "crit_agreement", "crit_snd", "crit_kd_loss"):
        assert k in scenes and k in cells
    src = cells[cells["method"] == "source"]
    assert (src["crit_agreement"] == 1.0).all() and cells["crit_kd_loss"].isna().all()
    assert (scenes["crit_entropy"] >= 0).all() and scenes["crit_snd"].notna().all()
    # the known-class confusion has no row of the held-out class
    conf = np.stack([np.asarray(c).reshape(12, 12) for c in scenes["conf"]])
    assert conf[:, held, :].sum() == 0
    from bench.report import make_report

    written = {p.name for p in make_report(tmp_path / "out")}
    assert "table_openset.md" in written
    assert "AUROC" in (tmp_path / "out" / "report" / "table_openset.md").read_text()
