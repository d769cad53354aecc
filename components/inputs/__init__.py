"""Inputs: the tf.data pipeline over prepared TFRecords, augmentation, and normalisation.

* :func:`build_dataset` -- ``(images, labels)`` batches for training or evaluation;
  :func:`distributed_dataset` -- the same under a ``tf.distribute`` strategy.
* :func:`check_prepared` -- validate a prepared directory up front (raises DataError).
* :func:`normalization_layer` -- the model's first layer (the pipeline never normalises).
* :class:`InputConfig` -- the ``inputs`` section of params.yaml.
"""
from components.inputs.config import AugmentParams, InputConfig
from components.inputs.dataset import build_dataset, distributed_dataset, one_hot_labels, parse_batch
from components.inputs.normalization import PerImageStandardization, normalization_layer
from components.inputs.policies import expand_policies, output_is_uint8
from components.inputs.shards import check_prepared, num_examples, shard_paths, steps_per_epoch

__all__ = [
    "AugmentParams", "InputConfig", "PerImageStandardization", "build_dataset", "check_prepared",
    "distributed_dataset", "expand_policies", "normalization_layer", "num_examples", "one_hot_labels",
    "output_is_uint8", "parse_batch", "shard_paths", "steps_per_epoch",
]
