"""Inputs: the tf.data pipeline over prepared TFRecords, the device-resident input, augmentation,
and normalisation.

* :func:`build_dataset` -- ``(images, labels)`` batches for training or evaluation through
  tf.data (TensorFlow backend); :func:`distributed_dataset` -- the same under a
  ``tf.distribute`` strategy.
* :mod:`components.inputs.arrays` -- a split read into memory without TensorFlow;
  :mod:`components.inputs.device` -- batches drawn and augmented on the device from it
  (any backend).
* :func:`check_prepared` -- validate a prepared directory up front (raises DataError).
* :func:`normalization_layer` -- the model's first layer (the pipeline never normalises).
* :class:`InputConfig` -- the ``inputs`` section of params.yaml.

The tf.data names are imported on first use, so ``import components.inputs.device`` on the
JAX backend never loads TensorFlow.
"""
import importlib

from components.inputs.config import AugmentParams, InputConfig, one_hot_labels
from components.inputs.policies import expand_policies, output_is_uint8
from components.inputs.shards import check_prepared, num_examples, shard_paths, steps_per_epoch

# name -> module that defines it, imported when the name is first asked for (PEP 562)
_LAZY = {
    "build_dataset": "components.inputs.dataset", "distributed_dataset": "components.inputs.dataset",
    "parse_batch": "components.inputs.dataset",
    "PerImageStandardization": "components.inputs.normalization",
    "normalization_layer": "components.inputs.normalization",
}

__all__ = [
    "AugmentParams", "InputConfig", "PerImageStandardization", "build_dataset", "check_prepared",
    "distributed_dataset", "expand_policies", "normalization_layer", "num_examples", "one_hot_labels",
    "output_is_uint8", "parse_batch", "shard_paths", "steps_per_epoch",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
