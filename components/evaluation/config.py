"""The ``evaluate`` section of params.yaml.

No TensorFlow import here, so params are checked before anything heavy loads. Which
experiment is evaluated, and where its files are, comes from :mod:`components.experiments`.
"""
from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """How ``python -m pipeline.evaluate`` scores, times and judges one experiment's model."""

    # The Keras backend that loads and scores the model (components/backend.py); $KERAS_BACKEND,
    # when set, wins. A model exported on either backend scores the same on both.
    backend: Literal["tensorflow", "jax"] = "tensorflow"
    batch_size: int = 256  # images per batch, for scoring the test split and for the images/s figure
    throughput_batches: int = 10  # timed batches of batch_size (after warm-up) behind images/s
    latency_runs: int = 50  # timed single-image calls; the median is reported, in ms
    warmup_runs: int = 3  # untimed calls before each timing (graph tracing, allocator, caches)
    ece_bins: int = 15  # equal-width confidence bins for the expected calibration error
    num_worst: int = 36  # images in the grid of most confidently misclassified test images
    thresholds_file: str = "thresholds.yaml"  # minimum accuracies and the largest allowed drop
    warn_only: bool = False  # on a rejected verdict: print a warning and exit 0 instead of failing

    def __post_init__(self):
        for name in ("batch_size", "throughput_batches", "latency_runs", "ece_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_runs", "num_worst"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.thresholds_file.strip():
            raise ValueError("thresholds_file must name a YAML file, e.g. thresholds.yaml")
