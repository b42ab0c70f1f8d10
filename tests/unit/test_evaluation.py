"""Metrics against hand-computed values and a brute-force AUC."""

from __future__ import annotations

import numpy as np
import pytest

from happysad.results import evaluation


def test_confusion_and_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4])
    assert evaluation.confusion(y, p).tolist() == [[3, 1], [1, 2]]
    m = evaluation.binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)


def test_auc_is_the_probability_a_happy_face_scores_above_a_sad_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.5 + y * 0.3, 2)  # rounded: plenty of ties
    pos, neg = p[y == 1], p[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert evaluation.roc_auc(y, p) == pytest.approx(brute)


def test_roc_curve_runs_from_corner_to_corner():
    fpr, tpr = evaluation.roc_curve(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.4, 0.35]))
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_auc_of_one_class_is_undefined():
    assert np.isnan(evaluation.roc_auc(np.ones(4), np.linspace(0, 1, 4)))


def test_balanced_accuracy_weighs_each_class_the_same():
    from happysad.results.evaluation import balanced_accuracy, class_confusion, class_recall

    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    counts = class_confusion(truth, predicted, 4)  # class 3 has no image
    assert counts[0].tolist() == [3, 1, 0, 0] and counts.sum() == 8
    assert class_recall(counts).tolist() == [0.75, 0.5, 1.0, 0.0]
    assert balanced_accuracy(counts) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
