import math

import numpy as np

from bench.metrics import accuracy, confusion, iou_per_class, miou


def test_confusion_ignores_label_minus_one():
    pred = np.array([0, 1, 1, 2, 0])
    label = np.array([0, 1, -1, 2, 1])
    c = confusion(pred, label, 3)
    assert c.sum() == 4
    assert c[1, 0] == 1 and c[0, 0] == 1 and c[1, 1] == 1 and c[2, 2] == 1


def test_iou_hand_computed():
    # truth:  0 0 0 1 1 2 ; pred: 0 0 1 1 1 1
    pred = np.array([0, 0, 1, 1, 1, 1])
    label = np.array([0, 0, 0, 1, 1, 2])
    c = confusion(pred, label, 4)
    iou = iou_per_class(c)
    assert math.isclose(iou[0], 2 / 3)  # tp 2, fn 1, fp 0
    assert math.isclose(iou[1], 2 / 4)  # tp 2, fp 2 (0->1, 2->1)
    assert iou[2] == 0.0  # in truth, never predicted
    assert math.isnan(iou[3])  # in neither: excluded from the mean
    assert math.isclose(miou(c), (2 / 3 + 1 / 2 + 0) / 3)
    assert math.isclose(accuracy(c), 4 / 6)


def test_eval_classes_restrict_mean_and_points():
    pred = np.array([0, 1, 2, 2])
    label = np.array([0, 1, 2, 3])  # class 3 not evaluated: its point is dropped
    c = confusion(pred, label, 4, classes=(0, 1, 2))
    assert c.sum() == 3
    assert miou(c, (0, 1, 2)) == 1.0


def test_predicted_but_absent_class_is_not_scored():
    """Score what exists (issue 27): a class without ground-truth points is left out of the mean even
    when predicted; its stray predictions still cost the true class's IoU. (Before: class 1 scored 0.)"""
    c = confusion(np.array([1, 1]), np.array([0, 0]), 2)
    assert miou(c) == 0.0  # class 0: 0/2; class 1 not scored
    assert math.isnan(iou_per_class(c)[1])
    c = confusion(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]), 2)
    assert miou(c) == 0.75  # class 0: 3/4; before: (0.75 + 0) / 2
    assert miou(c, (0, 1)) == 0.75 and math.isnan(miou(c, (1,)))


def test_batched_miou_matches_the_single_matrix_rule():
    from bench.stats import miou_batch

    rng = np.random.default_rng(0)
    confs = rng.integers(0, 5, size=(4, 3, 6, 6))
    confs[0, 0] = 0  # no point at all: undefined
    confs[1, 1, 2, :] = 0
    confs[1, 1, :, 2] = 0  # class 2 absent from truth and prediction: excluded
    confs[2, 0, 3, :] = 0  # class 3 predicted but absent from the truth: not scored either
    for classes in (None, (0, 2, 3)):
        got = miou_batch(confs, classes)
        want = np.array([[miou(c, classes) for c in row] for row in confs])
        assert np.allclose(got, want, equal_nan=True)
