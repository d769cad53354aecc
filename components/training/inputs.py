"""The trainer's two input pipelines, behind one function: tf.data, or device-resident.

* ``tfdata`` (TensorFlow backend): the tf.data pipeline over the shards
  (:mod:`components.inputs.dataset`), read, shuffled and augmented by tf.data's threads.
* ``device`` (any backend; the only one on JAX): each split read into memory once
  without TensorFlow (:mod:`components.inputs.arrays`), sent to the device as uint8, and
  every batch drawn and augmented there (:mod:`components.inputs.device`).

``fit`` gets a finite validation set holding every example once, ``steps_per_epoch`` and
for training either one pass (``tfdata``: a data set of exactly ``steps_per_epoch``
batches; Keras 3.15 makes a new iterator, which draws the next pass, when one ends, and
runs a last, shorter execution when ``steps_per_execution`` does not divide the epoch),
the same passes in blocks of one execution's batches (``tfdata`` with ``block``, for the
train function of :mod:`components.training.blocks`), or an endless stream cut into
epochs by ``steps_per_epoch`` (``device``, the tf.data service, or ``repeat`` asked for;
there Keras 3.15 rounds every epoch up to whole executions, see
:func:`execution_steps`). TensorFlow is imported only for ``tfdata``.

Among several workers (``device`` only, on JAX: :mod:`components.training.distribute`) each
worker draws its local share of every global batch from its own train shard files, in its
own order, and scores the whole validation split in local batches: Keras assembles the
workers' local batches into one global batch, so the validation figures are computed over
every worker's copy of the split at once and are the same on all of them.
"""
from __future__ import annotations

import dataclasses
import pathlib

from components.inputs.config import InputConfig, one_hot_labels
from components.inputs.policies import expand_policies
from components.training.distribute import Cluster, local_batch_size, worker_shards


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """What ``fit`` trains and validates on."""

    train: object  # one epoch's pass (one_pass_per_iteration), else endless: per_epoch batches (blocks: one
    #                per call, a pass's blocks) make one epoch
    validation: object  # finite: every validation example once, in a fixed order


def one_pass_per_iteration(inputs: InputConfig) -> bool:
    """Whether :func:`build_training_inputs` gives ``fit`` one epoch's pass for ``inputs``
    (each iterator a new pass): tf.data, unless the stream is endless (``repeat``) or comes
    through the tf.data service (whose passes vary in length)."""
    return inputs.pipeline == "tfdata" and not inputs.data_service and not inputs.repeat


def execution_steps(setting: int, per_epoch: int, one_pass: bool) -> int:
    """Train steps per compiled call (Keras' ``steps_per_execution``) for ``train.steps_per_execution``.

    With one pass per epoch (``one_pass``) Keras ends each epoch's last execution at the
    end of its pass, so any value works: at most the epoch. On an endless stream cut by
    ``steps_per_epoch``, Keras 3.15 runs whole executions only
    (``EpochIterator._enumerate_iterator``: 7 steps in executions of 4 train 8), so it is
    the largest divisor of ``per_epoch`` not above ``setting``, which keeps every epoch
    exactly ``per_epoch`` steps (1 when ``per_epoch`` is prime).
    """
    if one_pass:
        return max(1, min(setting, per_epoch))
    return max(d for d in range(1, min(setting, per_epoch) + 1) if per_epoch % d == 0)


def execution_blocks(inputs: InputConfig, per_call: int, distributed: bool) -> int:
    """Batches per input element for ``fit`` (0: one batch per element): ``per_call`` (the
    model's ``steps_per_execution``) where the train function of
    :mod:`components.training.blocks` takes them, that is one pass per epoch of tf.data
    (:func:`one_pass_per_iteration`), several steps per call, and one device as is (not
    ``distributed``: several replicas or workers, or any ``tf.distribute`` strategy but the
    default, whose steps Keras runs through ``strategy.run``)."""
    return per_call if one_pass_per_iteration(inputs) and per_call > 1 and not distributed else 0


def build_training_inputs(data_dir: pathlib.Path, info: dict, inputs: InputConfig, per_epoch: int,
                          completed_epochs: int, cluster: Cluster = Cluster(), block: int = 0) -> TrainingInputs:
    """The inputs of ``inputs.pipeline`` (resolved: ``tfdata`` or ``device``), positioned so
    the first training batch is epoch ``completed_epochs + 1``'s; with several workers in
    ``cluster``, this worker's part (``device`` only, batches of the local batch size); with
    ``block`` (from :func:`execution_blocks`), training batches in blocks of that many."""
    if inputs.pipeline == "device":
        return _device_inputs(data_dir, info, inputs, per_epoch, completed_epochs, cluster)
    return _tfdata_inputs(data_dir, info, inputs, per_epoch, completed_epochs, block)


def _device_inputs(data_dir: pathlib.Path, info: dict, inputs: InputConfig, per_epoch: int, completed_epochs: int,
                   cluster: Cluster) -> TrainingInputs:
    from components.inputs.arrays import read_split
    from components.inputs.device import DeviceBatches

    one_hot, num_classes = one_hot_labels(inputs), info["num_classes"]
    ops = [op for op in expand_policies(inputs.augment, info["image_shape"][2]) if op != "standardize"]
    # cutout erases with the data set mean, so an erased patch normalises to about zero
    fill = [float(v) for v in info["train_statistics"]["mean"]]
    several = cluster.num_workers > 1
    batch_size = local_batch_size(inputs.batch_size, cluster)
    shards = worker_shards(len(info["splits"]["train"]["shards"]), cluster) if several else None
    train_images, train_labels = read_split(data_dir, "train", info, shards=shards)
    validation_images, validation_labels = read_split(data_dir, "validation", info)
    # An epoch of fewer batches than a pass (a budget in steps, or what every worker can draw).
    epoch_steps = per_epoch if several or per_epoch < len(train_images) // batch_size else None
    train = DeviceBatches(train_images, train_labels, num_classes=num_classes, batch_size=batch_size,
                          training=True, ops=ops, params=inputs.augment_params, fill=fill, one_hot=one_hot,
                          seed=inputs.seed, drop_remainder=inputs.drop_remainder, start_epoch=completed_epochs,
                          epoch_steps=epoch_steps, stream=("worker", cluster.worker) if several else ())
    validation = DeviceBatches(validation_images, validation_labels, num_classes=num_classes,
                               batch_size=batch_size, training=False, one_hot=one_hot)
    return TrainingInputs(train, validation)


def _tfdata_inputs(data_dir: pathlib.Path, info: dict, inputs: InputConfig, per_epoch: int,
                   completed_epochs: int, block: int) -> TrainingInputs:
    import tensorflow as tf

    from components.inputs.dataset import build_dataset
    from components.inputs.shards import steps_per_epoch

    train = build_dataset(data_dir, "train", inputs, training=True)
    if per_epoch < steps_per_epoch(info, "train", inputs.batch_size, inputs.drop_remainder):
        train = train.take(per_epoch)  # an epoch shorter than a pass (a budget in steps): its first batches
    # Evaluation keeps every example: ceil(examples / batch) batches, checked as they are read.
    validation_batches = steps_per_epoch(info, "validation", inputs.batch_size, drop_remainder=False)
    validation = build_dataset(data_dir, "validation", inputs, training=False).apply(
        tf.data.experimental.assert_cardinality(validation_batches))
    passes = epoch_passes(train, per_epoch, completed_epochs, one_pass=one_pass_per_iteration(inputs),
                          exact=not inputs.data_service, block=block)
    return TrainingInputs(passes, validation)


def epoch_passes(train_data, per_epoch: int, completed_epochs: int, one_pass: bool = True, exact: bool = True,
                 block: int = 0):
    """What ``fit`` trains on: ``train_data``'s passes, each checked (``exact``) to hold
    exactly ``per_epoch`` batches, the first being epoch ``completed_epochs + 1``'s.

    ``one_pass``: one pass, of known length ``per_epoch``: with ``steps_per_epoch`` given,
    Keras 3.15 makes one iterator for the first epoch and a new one (the next pass) each
    time one has given the data set's length (``EpochIterator._enumerate_iterator``), so
    epoch e trains on the e-th iterator. (Without ``steps_per_epoch`` it would make two
    per epoch, one never read.) Otherwise the passes one after another as one endless
    stream. ``block``: each pass in blocks of ``block`` batches stacked (the last one
    shorter), the passes one after another: one block per compiled call, so an epoch's
    ``ceil(per_epoch / block)`` calls take exactly its pass
    (:mod:`components.training.blocks`). Through the tf.data service a pass's count
    varies (each service
    worker drops its own last partial batch), so it is not checked and an epoch is
    ``per_epoch`` batches of the stream; an already endless ``train_data`` (``repeat``) is
    taken as it is (in blocks of ``block`` where asked: ``bench train`` times fits on one).

    Each pass draws its own shuffle and augmentation seeds from streams that start afresh
    in every process, so epoch e trains on the e-th draw. A resumed run first moves the
    streams on by ``completed_epochs`` (making an iterator draws a pass's seeds; no data
    is read), so it does not replay epoch 1's order. (With ``cache: memory`` or ``disk``,
    the cached file order is the first pass the process completes, so it still differs
    from the uninterrupted run's.) The pass's length is asserted, so Keras never steps
    into an exhausted iterator: on a finite data set of unknown size Keras 3.15 does, once
    per epoch, and counts an optimizer step that updates nothing but moves the
    learning-rate schedule on.
    """
    import tensorflow as tf

    # Blocks: prefetch(1), the next block made while the call before it trains.
    if train_data.cardinality() == tf.data.INFINITE_CARDINALITY:
        return train_data.batch(block).prefetch(1) if block else train_data
    checked = train_data.apply(tf.data.experimental.assert_cardinality(per_epoch)) if exact else train_data
    for _ in range(completed_epochs):
        iter(checked)
    if block:  # each pass blocked on its own, so no block spans two epochs
        return checked.batch(block).repeat().prefetch(1)
    return checked if one_pass else checked.repeat()
