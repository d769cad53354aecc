"""Evaluation metrics against values computed by hand on a six-example, three-class prediction set."""
from __future__ import annotations

import math

import numpy as np
import pytest

from components.evaluation import metrics as m

# Softmax probabilities chosen so every number below can be worked out on paper; the
# logits are their logs, so softmax(logits) gives them back exactly (up to float error).
#            class 0  1     2       label  predicted  confidence  correct
PROBS = np.array([
    [0.70, 0.20, 0.10],  # 0      0          0.70        yes
    [0.55, 0.30, 0.15],  # 1      0          0.55        no   (true class 2nd)
    [0.05, 0.90, 0.05],  # 1      1          0.90        yes
    [0.25, 0.45, 0.30],  # 2      1          0.45        no   (true class 2nd)
    [0.10, 0.05, 0.85],  # 2      2          0.85        yes
    [0.30, 0.65, 0.05],  # 2      1          0.65        no   (true class 3rd)
])
LABELS = np.array([0, 1, 1, 2, 2, 2])
LOGITS = np.log(PROBS)
NAMES = ["cat", "dog", "bird"]


def test_accuracy_and_top_k():
    assert m.accuracy(LOGITS, LABELS) == pytest.approx(3 / 6)  # examples 1, 3, 5 right
    assert m.top_k_accuracy(LOGITS, LABELS, k=1) == pytest.approx(3 / 6)
    assert m.top_k_accuracy(LOGITS, LABELS, k=2) == pytest.approx(5 / 6)  # all but example 6 (true class 3rd)
    assert m.top_k_accuracy(LOGITS, LABELS, k=5) == pytest.approx(1.0)  # k capped at 3 classes


def test_top_k_counts_ties_in_the_examples_favour_and_argmax_takes_the_lowest_id():
    logits = np.array([[1.0, 1.0, 0.0]])
    assert m.top_k_accuracy(logits, np.array([1]), k=1) == 1.0  # nothing strictly higher than class 1
    assert m.accuracy(logits, np.array([1])) == 0.0  # argmax picks class 0 on the tie
    assert m.predictions(logits).tolist() == [0]


def test_cross_entropy_is_the_mean_negative_log_probability_of_the_label():
    # -(ln .70 + ln .30 + ln .90 + ln .30 + ln .85 + ln .05) / 6
    # = (0.3566749 + 1.2039728 + 0.1053605 + 1.2039728 + 0.1625189 + 2.9957323) / 6 = 6.0282322 / 6
    assert m.cross_entropy(LOGITS, LABELS) == pytest.approx(1.0047054, abs=1e-6)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert m.cross_entropy(logits, np.array([1, 1])) == pytest.approx(500.0)  # (1000 + 0) / 2
    assert np.isfinite(m.log_softmax(logits)).all()


def test_confusion_matrix_rows_are_true_columns_predicted():
    matrix = m.confusion_matrix(LABELS, m.predictions(LOGITS), 3)
    # true 0: ex1 -> 0; true 1: ex2 -> 0, ex3 -> 1; true 2: ex4 -> 1, ex5 -> 2, ex6 -> 1
    assert matrix.tolist() == [[1, 0, 0],
                               [1, 1, 0],
                               [0, 2, 1]]


def test_per_class_precision_recall_f1():
    scores = m.per_class_scores(m.confusion_matrix(LABELS, m.predictions(LOGITS), 3))
    # precision = diagonal / column sum: 1/2, 1/3, 1/1; recall = diagonal / row sum: 1/1, 1/2, 1/3
    assert scores["precision"] == pytest.approx([0.5, 1 / 3, 1.0])
    assert scores["recall"] == pytest.approx([1.0, 0.5, 1 / 3])
    # F1 = 2PR/(P+R): 2(.5)(1)/1.5 = 2/3; 2(1/3)(1/2)/(5/6) = 2/5; 2(1)(1/3)/(4/3) = 1/2
    assert scores["f1"] == pytest.approx([2 / 3, 0.4, 0.5])
    assert scores["support"].tolist() == [1, 2, 3]


def test_zero_over_zero_is_zero():
    # Class 2 is neither predicted nor present; class 1 is predicted but never right.
    matrix = m.confusion_matrix(np.array([0, 0]), np.array([0, 1]), 3)
    scores = m.per_class_scores(matrix)
    assert scores["precision"].tolist() == [1.0, 0.0, 0.0]  # class 1: 0/1; class 2: 0/0 -> 0
    assert scores["recall"].tolist() == [0.5, 0.0, 0.0]  # class 1 and 2: 0/0 -> 0
    assert scores["f1"] == pytest.approx([2 / 3, 0.0, 0.0])  # class 1, 2: P + R = 0 -> 0
    assert not np.isnan(scores["f1"]).any()


def test_expected_calibration_error_five_bins():
    # Bins of width 0.2. (0.4, 0.6]: ex2 (.55, wrong), ex4 (.45, wrong): |0 - 1.00| = 1.00
    # (0.6, 0.8]: ex1 (.70, right), ex6 (.65, wrong): |1 - 1.35| = 0.35
    # (0.8, 1.0]: ex3 (.90, right), ex5 (.85, right): |2 - 1.75| = 0.25
    # ECE = sum_b (n_b/N)|acc_b - conf_b| = sum_b |correct_b - conf_sum_b| / N = 1.60 / 6
    assert m.expected_calibration_error(LOGITS, LABELS, bins=5) == pytest.approx(1.6 / 6)


def test_expected_calibration_error_default_fifteen_bins():
    # Width 1/15: the six confidences fall in six different bins (.45 in bin 7, .55 in 9, .65 in 10,
    # .70 in 11, .85 in 13, .90 in 14), so ECE = mean |correct - confidence|
    # = (.30 + .55 + .10 + .45 + .15 + .65) / 6 = 2.20 / 6
    assert m.expected_calibration_error(LOGITS, LABELS) == pytest.approx(2.2 / 6)


def test_perfectly_calibrated_bins_give_zero():
    # Two examples at confidence 0.5 (2 classes, equal logits): one right, one wrong -> |1 - 1.0| = 0
    logits = np.zeros((2, 2))
    assert m.expected_calibration_error(logits, np.array([0, 1])) == pytest.approx(0.0)


def test_summarize_collects_everything():
    summary = m.summarize(LOGITS, LABELS, NAMES, ece_bins=5)
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["top5_accuracy"] == pytest.approx(1.0) and summary["top_k"] == 3
    assert summary["loss"] == pytest.approx(1.0047054, abs=1e-6)
    assert summary["ece"] == pytest.approx(1.6 / 6)
    assert summary["macro_precision"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 3)  # 0.611111
    assert summary["macro_recall"] == pytest.approx((1.0 + 0.5 + 1 / 3) / 3)  # 0.611111
    assert summary["macro_f1"] == pytest.approx((2 / 3 + 0.4 + 0.5) / 3)  # 0.522222
    assert summary["examples"] == 6
    assert summary["per_class"]["dog"] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2})
    assert summary["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 2, 1]]
    assert all(isinstance(v, float) for v in (summary["accuracy"], summary["loss"], summary["ece"]))
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.values())


@pytest.mark.parametrize("logits, labels, message", [
    (np.zeros((3,)), np.zeros(3, int), "logits must be a \\[N, C\\]"),
    (np.zeros((3, 2)), np.zeros(2, int), "labels must be a \\[N\\] array matching"),
    (np.zeros((2, 2)), np.array([0, 2]), "labels must be in \\[0, 2\\), got 0..2"),
    (np.zeros((2, 2)), np.array([0.0, 1.0]), "integer class ids"),
    (np.zeros((0, 2)), np.zeros(0, int), "no examples"),
])
def test_bad_shapes_say_what_was_received(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        m.accuracy(logits, labels)


def test_summarize_checks_label_names():
    with pytest.raises(ValueError, match="2 label names for 3 classes"):
        m.summarize(LOGITS, LABELS, NAMES[:2])
