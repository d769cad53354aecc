"""Inference speed: images per second at a large batch, and single-image latency.

Both take ``predict``, a function from a NumPy batch to a NumPy array that returns only
when the result is computed (e.g. a ``tf.function`` followed by ``.numpy()``), so the
clock measures the work and not an asynchronous dispatch. Pure Python otherwise.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


def fill_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
    """The first ``batch_size`` images, tiled when there are fewer (real pixels, the real shape)."""
    if len(images) == 0:
        raise ValueError("no images to time inference on")
    repeats = -(-batch_size // len(images))  # ceil division
    return np.concatenate([images] * repeats)[:batch_size] if repeats > 1 else images[:batch_size]


def images_per_second(predict: Predict, batch: np.ndarray, batches: int, warmup: int = 3) -> float:
    """Throughput (images/s) over ``batches`` timed calls of ``predict(batch)``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        predict(batch)
    start = time.perf_counter()
    for _ in range(batches):
        predict(batch)
    elapsed = time.perf_counter() - start
    return len(batch) * batches / elapsed


def latency_ms(predict: Predict, image: np.ndarray, runs: int, warmup: int = 3) -> float:
    """Median wall time (milliseconds) of ``runs`` calls of ``predict`` on a batch of one image.

    The median, not the mean: one descheduled call on a shared machine should not move it.
    """
    batch = image[None] if image.ndim == 3 else image[:1]
    for _ in range(warmup):
        predict(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
