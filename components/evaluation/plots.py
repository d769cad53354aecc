"""Figures and DVC plot data: the confusion matrix and the most confidently wrong test images.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly (no
``pyplot``): no global backend state, no display needed, safe in any process.
"""
from __future__ import annotations

import json
import math
import os
from typing import Sequence

import numpy as np

from components.evaluation.io import write_atomic, write_text_atomic


def confusion_rows(labels: np.ndarray, predicted: np.ndarray, label_names: Sequence[str]) -> list[dict[str, str]]:
    """One ``{"actual": name, "predicted": name}`` row per example, in test-set order.

    The layout DVC's ``confusion`` template counts (``x: actual``, ``y: predicted``).
    """
    names = [str(n) for n in label_names]
    return [{"actual": names[t], "predicted": names[p]} for t, p in zip(np.asarray(labels), np.asarray(predicted))]


def write_confusion_rows(path: str | os.PathLike, rows: list[dict[str, str]]) -> None:
    """Write DVC confusion rows as a JSON list, one row per line (small, readable git diffs)."""
    body = ",\n".join(json.dumps(row) for row in rows)
    write_text_atomic(path, f"[\n{body}\n]\n" if rows else "[]\n")


def worst_misclassified(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` misclassified examples, most confident (in the wrong class) first.

    Confidence is the probability of the predicted class; ties keep test-set order.
    """
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:count]]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | os.PathLike) -> None:
    """Save ``figure`` as PNG at ``path`` atomically."""
    write_atomic(path, lambda temp: figure.savefig(temp, format="png", dpi=100, bbox_inches="tight"))


def plot_confusion(matrix: np.ndarray, label_names: Sequence[str], path: str | os.PathLike, title: str) -> None:
    """A heat map of the confusion matrix (rows true class, columns predicted), counts in the cells."""
    matrix = np.asarray(matrix)
    classes = len(label_names)
    side = max(4.0, 0.55 * classes + 2.5)  # inches; about half an inch per class
    figure = _new_figure(side + 1.0, side)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="test images")
    axes.set_xticks(range(classes), [str(n) for n in label_names], rotation=45, ha="right")
    axes.set_yticks(range(classes), [str(n) for n in label_names])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if classes <= 20:  # beyond that the numbers are unreadable; the colours still show the pattern
        threshold = matrix.max() / 2 if matrix.size and matrix.max() > 0 else 0
        for t in range(classes):
            for p in range(classes):
                axes.text(p, t, str(int(matrix[t, p])), ha="center", va="center", fontsize=8,
                          color="white" if matrix[t, p] > threshold else "black")
    save_figure(figure, path)


def plot_worst(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, indices: np.ndarray,
               label_names: Sequence[str], path: str | os.PathLike, title: str) -> None:
    """A grid of the test images at ``indices``, each captioned true / predicted (confidence)."""
    count = len(indices)
    columns = max(1, math.ceil(math.sqrt(count))) if count else 1
    rows = max(1, math.ceil(count / columns)) if count else 1
    figure = _new_figure(1.7 * columns + 0.4, 1.9 * rows + 0.6)
    figure.suptitle(title)
    if count == 0:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    for position, index in enumerate(indices):
        axes = figure.add_subplot(rows, columns, position + 1)
        image = np.asarray(images[index])
        if image.shape[-1] == 1:
            axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            axes.imshow(np.clip(image, 0, 255).astype(np.uint8))
        predicted = int(probabilities[index].argmax())
        axes.set_title(f"true: {label_names[int(labels[index])]}\n"
                       f"pred: {label_names[predicted]} ({probabilities[index, predicted]:.0%})", fontsize=7)
        axes.axis("off")
    save_figure(figure, path)
