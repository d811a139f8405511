"""bench.stats at the level of independent units (issue 27): the resampling design, the paired
bootstrap test, the inert rule, rescoring by the "score what exists" rule and the ECE."""

import numpy as np
import pandas as pd
import pytest

from bench import rescore, stats
from bench.data.classes import CLASS_ID, CLASSES, NUM_CLASSES
from bench.errors import BenchError
from bench.metrics import ece, miou


# ------------------------------------------------------------------------------------------ design
def test_disjoint_scenes_are_resampled_within_their_stream_and_one_model_is_not_resampled():
    keys = [(0, s, f"scene_{s}_{i}") for s in range(3) for i in range(5 + s)]  # streams of 5, 6, 7 scenes
    d = stats.Design.from_keys(*zip(*keys))
    assert not d.crossed and d.n_models == 1
    w_model, w_unit = d.weights(200, seed=1)
    assert (w_model == 1).all()
    for s, n in enumerate((5, 6, 7)):
        assert (w_unit[:, d.stream == s].sum(1) == n).all()  # each stream keeps its number of scenes
    assert w_unit.std(0).min() > 0  # every scene is resampled


def test_model_seeds_are_resampled_and_scenes_nested_in_them():
    keys = [(m, 0, f"m{m}_s{i}") for m in range(4) for i in range(6)]
    d = stats.Design.from_keys(*zip(*keys))
    w_model, w_unit = d.weights(300, seed=2)
    assert d.n_models == 4 and not d.crossed
    assert (w_model.sum(1) == 4).all() and (w_model != 1).any()
    for m in range(4):
        assert (w_unit[:, d.model == m].sum(1) == 6).all()


def test_scenes_shared_by_several_seeds_are_drawn_once_for_all_of_them():
    """Rows written before protocol v3: every seed (= model seed) reused the same test scenes."""
    keys = [(s, s, f"test_{i:04d}") for s in range(3) for i in range(8)]
    d = stats.Design.from_keys(*zip(*keys))
    assert d.crossed and d.n_models == 3
    _, w_unit = d.weights(100, seed=3)
    for i in range(8):
        cols = np.flatnonzero(d.scene == d.scene[i])
        assert len(cols) == 3 and (w_unit[:, cols] == w_unit[:, cols[:1]]).all()


def test_nested_mean_is_the_mean_over_models_of_their_scene_means():
    keys = [(0, 0, "a"), (0, 0, "b"), (0, 1, "c"), (1, 0, "d")]
    d = stats.Design.from_keys(*zip(*keys))
    v = np.array([1.0, 2.0, 6.0, 10.0])
    assert d.nested_mean(v) == pytest.approx(((1 + 2 + 6) / 3 + 10) / 2)
    assert d.nested_mean(np.array([1.0, np.nan, 6.0, 10.0])) == pytest.approx((3.5 + 10) / 2)  # NaN left out


def test_pooled_miou_point_estimate_is_the_mean_of_the_streams_mious():
    rng = np.random.default_rng(0)
    confs = rng.integers(0, 50, size=(2, 9, NUM_CLASSES, NUM_CLASSES))
    keys = [(0, s, f"x{s}{i}") for s in range(3) for i in range(3)]
    d = stats.Design.from_keys(*zip(*keys))
    want = [np.mean([miou(confs[r, 3 * s:3 * s + 3].sum(0)) for s in range(3)]) for r in range(2)]
    assert d.pooled_miou(confs, None) == pytest.approx(want)


# ------------------------------------------------------------------------------------------- tests
def _model_dependent_effect(rng):
    """Per-scene differences of two rows over 3 model seeds x 30 scenes: +5 points on two models,
    -3 on the third, little scene noise: consistent within a model, not across models."""
    keys, d = [], []
    for m, effect in enumerate((0.05, 0.05, -0.03)):
        for i in range(30):
            keys.append((m, 0, f"m{m}_{i}"))
            d.append(effect + 0.005 * rng.standard_normal())
    return stats.Design.from_keys(*zip(*keys)), np.array(d)


def test_a_difference_that_holds_in_two_of_three_models_is_not_significant_at_the_model_level():
    design, d = _model_dependent_effect(np.random.default_rng(0))
    b = np.full(len(d), 0.4)
    _, p_scenes = stats.paired_test(b + d, b, stats.Design.independent(len(d)), "greater")
    _, p_models = stats.paired_test(b + d, b, design, "greater")
    assert p_scenes < 0.01  # 90 scenes taken as independent: "significant"
    assert p_models > 0.2  # the 3 models are the independent units: it is not


def test_paired_test_rejects_a_consistent_shift_and_not_identical_rows():
    rng = np.random.default_rng(1)
    a = 0.4 + 0.05 * rng.standard_normal(40)
    d, p = stats.paired_test(a + 0.02, a)
    assert d == pytest.approx(0.02) and p < 1e-3
    assert stats.paired_test(a, a) == (0.0, 1.0)
    _, p_noise = stats.paired_test(a + 0.001 * rng.standard_normal(40), a)
    assert p_noise > 0.01


def test_resamples_are_enough_for_the_holm_family():
    assert stats.n_boot_for(10) == stats.N_TEST
    m = 2000
    b = stats.n_boot_for(m)
    assert m / (b + 1) <= stats.ALPHA / 2


def test_top_group_uses_the_design():
    design, d = _model_dependent_effect(np.random.default_rng(2))
    base = np.full(len(d), 0.4)
    paired = {"A": base + d, "B": base}
    means = {"A": 0.42, "B": 0.40}
    assert stats.top_group(means, paired, stats.Design.independent(len(d))).members == {"A"}
    assert stats.top_group(means, paired, design).members == {"A", "B"}


# ------------------------------------------------------------------------------------------- inert
def test_inert_rule_flags_identical_and_negligible_rows_and_not_a_working_one():
    rng = np.random.default_rng(3)
    base = 0.4 + 0.1 * rng.standard_normal(48)
    assert stats.inert(base, base).inert
    tiny = stats.inert(base + 2e-5 * rng.standard_normal(48), base)  # SAR at lr 1e-4: ~1e-5 moves
    assert tiny.inert and tiny.reason == "equivalent" and -stats.INERT_MARGIN < tiny.lo <= tiny.hi < stats.INERT_MARGIN
    working = stats.inert(base + 0.01 + 0.005 * rng.standard_normal(48), base)
    assert not working.inert and working.lo > stats.INERT_MARGIN
    # a noisy row whose mean change is ~0 is not shown equivalent: its interval is wider than the margin
    noisy = stats.inert(base + 0.02 * rng.standard_normal(48), base)
    assert not noisy.inert


def test_inert_rule_identical_predictions_on_95_percent_of_points():
    rng = np.random.default_rng(4)
    base = 0.4 + 0.1 * rng.standard_normal(20)
    moved = base + 0.01 * rng.standard_normal(20)  # not equivalent within 0.1 points
    scored = np.full(20, 1000.0)
    assert stats.inert(moved, base, same=scored * 0.97, scored=scored).reason == "identical predictions"
    assert not stats.inert(moved, base, same=scored * 0.90, scored=scored).inert
    assert not stats.inert(moved, base).inert  # without the column only the equivalence decides


# ---------------------------------------------------------------------------------- score what exists
def _scene(truth: dict[str, int], wrong: dict[tuple[str, str], int]) -> np.ndarray:
    c = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for k, n in truth.items():
        c[CLASS_ID[k], CLASS_ID[k]] = n
    for (t, p), n in wrong.items():
        c[CLASS_ID[t], CLASS_ID[p]] += n
        c[CLASS_ID[t], CLASS_ID[t]] -= n
    return c


def test_rescore_scores_only_classes_with_ground_truth_in_the_cells_scenes():
    """synth-s3dis has no sofa: a few stray sofa predictions cost a whole class (0 IoU) under the old rule."""
    s1 = _scene({"wall": 500, "floor": 300, "chair": 100}, {("chair", "sofa"): 3})
    s2 = _scene({"wall": 400, "floor": 200, "table": 80}, {("wall", "sofa"): 2})
    cells = pd.DataFrame({"cell_id": ["c"], "miou": [0.5], "iou_sofa": [0.0], "iou_chair": [np.nan],
                          "iou_wall": [np.nan]})
    scenes = pd.DataFrame({"cell_id": ["c", "c"], "scene": ["a", "b"], "index": [0, 1],
                           "conf": [s1.reshape(-1).tolist(), s2.reshape(-1).tolist()]})
    groups = {"structure": (CLASS_ID["wall"], CLASS_ID["floor"], CLASS_ID["ceiling"]),
              "object": tuple(i for i, c in enumerate(CLASSES) if c not in ("wall", "floor", "ceiling"))}
    out, sc = rescore.rescore(cells, scenes, CLASSES, groups)
    total = s1 + s2
    present = ["wall", "floor", "chair", "table"]
    iou = {k: total[CLASS_ID[k], CLASS_ID[k]] / (total[CLASS_ID[k]].sum() + total[:, CLASS_ID[k]].sum()
                                                 - total[CLASS_ID[k], CLASS_ID[k]]) for k in present}
    assert out.at[0, "miou"] == pytest.approx(np.mean(list(iou.values())))
    assert np.isnan(out.at[0, "iou_sofa"]) and out.at[0, "miou_recorded"] == 0.5
    assert out.at[0, "miou_structure"] == pytest.approx((iou["wall"] + iou["floor"]) / 2)  # no ceiling: not scored
    assert out.at[0, "miou_object"] == pytest.approx((iou["chair"] + iou["table"]) / 2)
    # per scene: the classes of that scene only (scene a has no table, scene b no chair)
    w, f, ch = (s1[CLASS_ID[k], CLASS_ID[k]] / s1[CLASS_ID[k]].sum() for k in ("wall", "floor", "chair"))
    assert sc["miou"].iloc[0] == pytest.approx((w + f + ch) / 3)


def test_batched_miou_follows_the_same_rule_for_a_predicted_but_absent_class():
    c = _scene({"wall": 50, "floor": 40}, {("wall", "sofa"): 5})
    assert stats.miou_batch(c[None])[0] == pytest.approx(miou(c)) == pytest.approx((45 / 50 + 1.0) / 2)


# --------------------------------------------------------------------------------------- calibration
def test_ece_of_pooled_histograms_by_hand():
    count = np.array([0, 10, 30])
    conf_sum = np.array([0.0, 5.0, 27.0])  # mean confidence 0.5 and 0.9
    correct = np.array([0, 6, 24])  # accuracy 0.6 and 0.8
    assert ece(count, conf_sum, correct) == pytest.approx((abs(5 - 6) + abs(27 - 24)) / 40)
    assert np.isnan(ece(np.zeros(3), np.zeros(3), np.zeros(3)))


def test_rescore_pools_calibration_histograms_and_refuses_means_instead_of_sums():
    k = 15
    conf = _scene({"wall": 10}, {}).reshape(-1).tolist()

    def hist(b, n, mean_conf, right):
        count, s, cor = np.zeros(k), np.zeros(k), np.zeros(k)
        count[b], s[b], cor[b] = n, n * mean_conf, right
        return count.tolist(), s.tolist(), cor.tolist()

    h1, h2 = hist(13, 10, 0.9, 6), hist(7, 10, 0.5, 5)
    scenes = pd.DataFrame({"cell_id": ["c", "c"], "scene": ["a", "b"], "index": [0, 1], "conf": [conf, conf],
                           "calib_count": [h1[0], h2[0]], "calib_conf": [h1[1], h2[1]],
                           "calib_correct": [h1[2], h2[2]]})
    out, _ = rescore.rescore(pd.DataFrame({"cell_id": ["c"], "miou": [1.0]}), scenes, CLASSES)
    assert out.at[0, "ece"] == pytest.approx((abs(9 - 6) + abs(5 - 5)) / 20)
    bad = scenes.assign(calib_conf=[[v / 10 if v else 0.0 for v in h1[1]], h2[1]])  # a mean, not a sum
    with pytest.raises(BenchError, match="cell c: calibration histograms"):
        rescore.rescore(pd.DataFrame({"cell_id": ["c"], "miou": [1.0]}), bad, CLASSES)


def test_many_units_are_resampled_in_chunks_with_the_same_rules(monkeypatch):
    monkeypatch.setattr(stats, "WEIGHT_CELLS", 50)  # 20 units: chunks of 2 resamples
    keys = [(m, s, f"{m}{s}{i}") for m in range(2) for s in range(2) for i in range(5)]
    d = stats.Design.from_keys(*zip(*keys))
    chunks = list(d.iter_weights(7, seed=4))
    assert [len(wm) for wm, _ in chunks] == [2, 2, 2, 1]
    for _, wu in chunks:
        for s in range(4):
            assert (wu[:, d.stream == s].sum(1) == 5).all()
    v = np.arange(20.0)
    a, b = d.boot_nested_mean(v, 7, seed=4), d.boot_nested_mean(v, 7, seed=4)
    assert a.shape == (7, 1) and np.array_equal(a, b)
    # the (recorded) ECE of cells without histograms is kept
    out, _ = rescore.rescore(pd.DataFrame({"cell_id": ["c"], "miou": [0.3], "ece": [0.07]}), pd.DataFrame(), CLASSES)
    assert out.at[0, "ece"] == 0.07 and out.at[0, "miou"] == 0.3
