"""The ``inputs`` section of params.yaml: every knob of the tf.data pipeline, typed.

Filled with :func:`components.config.from_dict`, which rejects unknown keys; values
are checked here in ``__post_init__``. No TensorFlow import, so params can be checked
cheaply.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from components.inputs.policies import check_policy_names

AUTOTUNE = -1  # in params: let tf.data tune the value at run time


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Strengths of the augmentation ops (pixels are in 0-255 units throughout)."""

    crop_padding: int = 4  # px of zero padding each side before the random crop (CIFAR recipe: 4)
    max_shift: int = 2  # px, largest shift each way for random_shift (MNIST recipe: 2)
    flip_probability: float = 0.5  # per image, for flip_horizontal and flip_vertical
    scale_min: float = 0.9  # random_scale zoom factor range; > 1 zooms in
    scale_max: float = 1.1
    rotation_degrees: float = 15.0  # rotation angle drawn from [-r, r]
    brightness: float = 0.2  # offset drawn from [-b, b] x 255
    contrast: float = 0.2  # factor drawn from [1 - c, 1 + c]
    saturation: float = 0.2  # factor drawn from [1 - s, 1 + s]
    hue: float = 0.05  # hue rotation drawn from [-h, h] of a full turn
    cutout_size: int = 0  # px, side of the erased square; 0 means half the image side (16 for CIFAR)
    cutout_probability: float = 1.0  # per image
    mixup_alpha: float = 0.2  # Beta(alpha, alpha) mixing weights; 0.2 is the ImageNet/CIFAR recipe

    def __post_init__(self):
        if self.crop_padding < 0 or self.max_shift < 0 or self.cutout_size < 0:
            raise ValueError(f"crop_padding, max_shift and cutout_size must be >= 0 px, got "
                             f"{self.crop_padding}, {self.max_shift}, {self.cutout_size}")
        for name in ("flip_probability", "cutout_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not 0 <= self.rotation_degrees <= 180:
            raise ValueError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (a fraction of a turn), got {self.hue}")
        if self.mixup_alpha <= 0:
            raise ValueError(f"mixup_alpha must be > 0, got {self.mixup_alpha}")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How :func:`components.inputs.build_dataset` reads, shuffles, batches and augments.

    ``batch_size`` is global: under a ``tf.distribute`` strategy each replica gets
    ``batch_size / num_replicas``. Parallelism values take -1 for AUTOTUNE.
    """

    # Where batches come from. tfdata: the tf.data pipeline over the shards (TensorFlow only).
    # device: the split read into memory once (TF-free), batches drawn and augmented on the
    # device (components/inputs/device.py; any backend). auto: tfdata on TensorFlow, device on JAX.
    pipeline: Literal["auto", "tfdata", "device"] = "auto"
    batch_size: int = 128  # examples per batch, summed over replicas
    shuffle_buffer: int = 10000  # examples; 0 turns shuffling off (training only)
    # memory / disk: the serialized records, before the shuffle. decoded: the split read into
    # memory once as uint8 images (CIFAR-10's train split: 138 MB) and batches gathered from it
    # by a shuffled index: a sixth of the records path's CPU time per image (dataset.py).
    cache: Literal["none", "memory", "disk", "decoded"] = "none"
    cache_dir: str = ".cache/tfdata"  # for cache: disk; one file set per data set, split and content
    repeat: bool = False  # training only: an endless stream (then give the trainer steps_per_epoch)
    drop_remainder: bool = True  # training only; evaluation never drops examples
    deterministic: bool = True  # training order fixed by the seed; evaluation is always deterministic
    seed: int = 0  # shuffle and augmentation
    num_parallel_reads: int = AUTOTUNE  # shard files read at once
    num_parallel_calls: int = AUTOTUNE  # batches parsed and augmented at once
    prefetch: int = AUTOTUNE  # batches; 0 turns prefetching off
    augment: list[str] = dataclasses.field(default_factory=lambda: ["standard"])
    augment_params: AugmentParams = dataclasses.field(default_factory=AugmentParams)
    # Label format: sparse int64 class ids, or float32 [batch, num_classes] one-hot rows.
    # auto: one-hot exactly when mixup is on (its labels are soft), in training and evaluation
    # alike so one loss fits both.
    labels: Literal["auto", "sparse", "one_hot"] = "auto"
    xla: bool = True  # compile the augmentation ops with XLA (same results, several times faster)
    data_service: str | None = None  # tf.data service dispatcher, e.g. "grpc://host:5050" (training only)
    # distributed_epoch: the service's workers split the shard files, each example once per epoch.
    # parallel_epochs: every worker produces a whole (identically seeded) epoch; use with one worker.
    data_service_mode: Literal["distributed_epoch", "parallel_epochs"] = "distributed_epoch"
    # Up-front shard check when the dataset is built. full: read every record (checksums,
    # counts, schema, shapes, labels); counts: record framing, counts and the first record;
    # none: prepare_info.json and the shard files' presence only.
    verify_shards: Literal["full", "counts", "none"] = "full"

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 examples, got {self.shuffle_buffer}")
        for name in ("num_parallel_reads", "num_parallel_calls"):
            value = getattr(self, name)
            if value != AUTOTUNE and value < 1:
                raise ValueError(f"{name} must be -1 (AUTOTUNE) or >= 1, got {value}")
        if self.prefetch < AUTOTUNE:
            raise ValueError(f"prefetch must be -1 (AUTOTUNE), 0 (off) or a number of batches, got {self.prefetch}")
        if not self.augment:
            raise ValueError("augment must name at least one policy; use [none] for no augmentation")
        check_policy_names(self.augment)
        if "mixup" in self.augment and self.labels == "sparse":
            raise ValueError("mixup mixes labels into soft rows; it needs labels: auto or one_hot, not sparse")
        if self.cache == "disk" and not self.cache_dir:
            raise ValueError("cache: disk needs a cache_dir")
        if self.data_service is not None and not self.data_service.strip():
            raise ValueError("data_service must be a dispatcher address such as grpc://host:5050, or null")
        if self.data_service is not None and self.cache == "decoded":
            raise ValueError("cache: decoded keeps the split in this process's memory, which the tf.data service's "
                             "workers cannot read; with data_service use cache: none, memory or disk")


def one_hot_labels(config: InputConfig) -> bool:
    """Whether inputs built with ``config`` yield one-hot float labels (else int64 class ids)."""
    return config.labels == "one_hot" or (config.labels == "auto" and "mixup" in config.augment)
