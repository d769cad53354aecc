"""Classification metrics from logits, in plain NumPy (no TensorFlow, so they test in milliseconds).

Conventions used throughout:

* ``logits``: float array ``[N, C]``, unnormalised scores (the exported models' output);
  probabilities are ``softmax(logits)``. ``labels``: integer class ids ``[N]`` in ``[0, C)``.
* The predicted class is ``argmax`` over classes; on an exact tie the lowest class id wins
  (NumPy's ``argmax``), the same rule everywhere a prediction is needed.
* Top-k: an example counts as correct when fewer than ``k`` classes score *strictly*
  higher than its true class (ties go in the example's favour; with float logits ties
  practically never happen). ``k = min(5, C)`` for the reported "top-5".
* Precision, recall and F1 use the convention 0/0 -> 0: a class never predicted has
  precision 0, a class absent from the labels has recall 0, and F1 is 0 when precision
  + recall is 0. (scikit-learn's ``zero_division=0``.) Macro averages are unweighted
  means over all ``C`` classes, including any absent from the labels.
* Confusion matrix: rows are the true class, columns the predicted class.
* Expected calibration error (Guo et al. 2017): confidence = the top softmax
  probability; ``bins`` equal-width bins over (0, 1], bin ``b`` holding confidences in
  ``((b-1)/bins, b/bins]``; ECE = sum over bins of (examples in bin / N) *
  |accuracy in bin - mean confidence in bin|. Empty bins contribute 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

TOP_K = 5  # the "top-5" of the reports; lowered to the number of classes when fewer


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``logits`` [N, C] and ``labels`` [N]; ValueError saying what was received."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be a [N, C] array with C >= 1, got shape {logits.shape}")
    if labels.ndim != 1 or len(labels) != len(logits):
        raise ValueError(f"labels must be a [N] array matching logits' N={len(logits)}, got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no examples: logits and labels are empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must be in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
    return logits, labels.astype(np.int64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` along the last axis, computed stably (shift by the row max)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits along the last axis."""
    return np.exp(log_softmax(logits))


def predictions(logits: np.ndarray) -> np.ndarray:
    """Predicted class ids ``[N]``: argmax, lowest id on ties."""
    return np.asarray(logits).argmax(axis=-1).astype(np.int64)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose predicted class is the label."""
    logits, labels = _check(logits, labels)
    return float(np.mean(predictions(logits) == labels))


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = TOP_K) -> float:
    """Fraction of examples whose label is among the ``k`` highest-scoring classes.

    ``k`` is capped at the number of classes. Counts classes scoring strictly above the
    true class, so ties are in the example's favour (see the module docstring).
    """
    logits, labels = _check(logits, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, logits.shape[1])
    true_scores = logits[np.arange(len(labels)), labels][:, None]
    higher = np.sum(logits > true_scores, axis=1)
    return float(np.mean(higher < k))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (nats), from logits via a stable log-softmax."""
    logits, labels = _check(logits, labels)
    return float(-np.mean(log_softmax(logits)[np.arange(len(labels)), labels]))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[C, C]`` (int64): entry ``[t, p]`` = examples of true class ``t`` predicted as ``p``."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must be [N] arrays of one length, got {labels.shape} "
                         f"and {predicted.shape}")
    for name, values in (("labels", labels), ("predictions", predicted)):
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}), got {values.min()}..{values.max()}")
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator with 0/0 (and x/0) defined as 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (floats, [C]) and support (true examples, ints, [C]).

    From a confusion matrix with rows = true class. precision = TP / predicted as the
    class (column sum); recall = TP / true examples of the class (row sum);
    F1 = 2PR / (P + R). Every 0/0 is 0.
    """
    matrix = np.asarray(matrix)
    true_positive = np.diag(matrix).astype(np.float64)
    precision = _ratio(true_positive, matrix.sum(axis=0))
    recall = _ratio(true_positive, matrix.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": matrix.sum(axis=1).astype(np.int64)}


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width confidence bins, weighted by the examples in each bin.

    Confidence is the top softmax probability; a bin ``b`` (1-based) holds confidences in
    ``((b-1)/bins, b/bins]``. Returns a value in [0, 1].
    """
    logits, labels = _check(logits, labels)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probabilities = softmax(logits)
    confidence = probabilities.max(axis=1)
    correct = (predictions(logits) == labels).astype(np.float64)
    # ceil(conf * bins) - 1 puts conf in ((b-1)/bins, b/bins] into bin b-1 (0-based);
    # clip guards conf == 0 (impossible for softmax) and float overshoot above 1.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    confidence_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    # |sum(correct) - sum(conf)| / N per bin == (n_b / N) * |acc_b - conf_b|.
    return float(np.sum(np.abs(correct_sum - confidence_sum)) / len(labels))


def summarize(logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str], ece_bins: int = 15) -> dict:
    """Every test-set metric of one model, as plain Python numbers.

    Returns ``accuracy``, ``top5_accuracy`` (top-``min(5, C)``; ``top_k`` says which k),
    ``loss`` (mean cross-entropy, nats), ``ece``, ``macro_precision``, ``macro_recall``,
    ``macro_f1``, ``examples``, ``per_class`` ({name: {precision, recall, f1, support}})
    and ``confusion_matrix`` (list of rows, true class by predicted class).
    """
    logits, labels = _check(logits, labels)
    num_classes = logits.shape[1]
    if len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names for {num_classes} classes (logits' last axis)")
    matrix = confusion_matrix(labels, predictions(logits), num_classes)
    scores = per_class_scores(matrix)
    return {
        "accuracy": accuracy(logits, labels),
        "top5_accuracy": top_k_accuracy(logits, labels, TOP_K),
        "top_k": min(TOP_K, num_classes),
        "loss": cross_entropy(logits, labels),
        "ece": expected_calibration_error(logits, labels, ece_bins),
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
        "examples": int(len(labels)),
        "per_class": {
            str(name): {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                        "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": matrix.tolist(),
    }
