"""The tf.data input pipeline over a prepared data set.

Shape of the pipeline (training)::

    shard files -> [shard by file across input pipelines] -> shuffle file order
      -> interleave(TFRecordDataset) -> [cache serialized records] -> shuffle -> [repeat]
      -> batch -> parse + decode whole batches -> augment whole batches -> [tf.data service] -> prefetch

With ``cache: decoded`` the split is read once into memory as a uint8 array (every record
checked, :func:`components.inputs.arrays.read_split`) and the records path above is replaced
by batches of example indices::

    [shuffled permutation of 0..N-1, drawn anew each pass] -> batches of indices -> [repeat]
      -> gather the batch's images and labels + augment whole batches -> [tf.data service] -> prefetch

Per image that costs about a sixth of the CPU time of the records path (3 against 19 us
on Fashion-MNIST, 5 against 35 us on CIFAR-10, 2 cores; the records path parses and moves
each record through interleave, shuffle and batch), time a small model's train step,
which shares the same cores, gets back. The shuffle is a whole permutation per pass
rather than a buffer of ``shuffle_buffer`` records.

Evaluation drops the shuffles, repeat, augmentation and drop_remainder, and forces a
deterministic order: every example of the split exactly once, in the same order each
time (round-robin over the split's shards, in shard order), with any ``cache``.

Batching comes before parsing: ``tf.io.parse_example`` and ``tf.io.decode_raw`` on 256
serialized records cost about as much as on one, so the per-example work left is the
tf.data runtime moving strings. Images stay uint8 unless an augmentation op needs float
(see :mod:`components.inputs.augment`); normalisation is the model's first layer.
"""
from __future__ import annotations

import hashlib
import os
import pathlib

import tensorflow as tf

from components.compat import apply_keras_workarounds
from components.data.errors import DataError
from components.inputs.arrays import read_split
from components.inputs.augment import Augmenter
from components.inputs.config import AUTOTUNE, InputConfig, one_hot_labels
from components.inputs.policies import expand_policies
from components.inputs.shards import check_prepared, content_fingerprint, num_examples, shard_paths


def build_dataset(data_dir: str | os.PathLike, split: str, config: InputConfig, *, training: bool,
                  input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(images, labels)`` batches of ``split`` in the prepared ``data_dir``.

    images: ``[batch, H, W, C]`` in 0-255 units, not normalised: uint8 when every active
    augmentation op keeps uint8 (``none``, ``standard``, crops, shifts, flips,
    ``cutout``), else float32. Evaluation (``training=False``) always yields uint8.

    labels: int64 class ids ``[batch]``; or float32 ``[batch, num_classes]`` one-hot rows
    when ``config.labels`` is ``one_hot``, or ``auto`` with ``mixup`` in the augment list
    (soft rows that sum to one after mixup; plain one-hot in evaluation).

    ``training=True``: shuffled with ``config.seed``, augmented, last partial batch dropped
    when ``config.drop_remainder``, repeated forever when ``config.repeat``. The same
    seed gives the same batches; each new iteration (epoch) reshuffles and redraws.

    ``input_context`` (from ``strategy.distribute_datasets_from_function``): batches are
    per replica (``config.batch_size`` is the global size) and each input pipeline reads
    its own subset of the shard files. Without it, the dataset carries an auto-shard
    policy of DATA, correct but wasteful across workers; prefer the input-context route.

    The shards are checked first (``config.verify_shards``; with ``cache: decoded`` every
    record, as it is read into memory), so bad input raises :class:`DataError` naming the
    file before any training step.
    """
    apply_keras_workarounds()  # so Keras takes these batches under any strategy (components/compat.py)
    decoded = config.cache == "decoded"
    # read_split checks every record as it decodes it: a second full check would read the split twice
    info = check_prepared(data_dir, (split,), mode="none" if decoded else config.verify_shards)
    if num_examples(info, split) == 0:
        raise DataError(f"{pathlib.Path(data_dir)}: split '{split}' has no examples")
    files = shard_paths(data_dir, info, split)
    shards = list(range(len(files)))
    pipeline_id, pipelines, batch_size = 0, 1, config.batch_size
    if input_context is not None:
        pipeline_id, pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
        batch_size = input_context.get_per_replica_batch_size(config.batch_size)
        files = shard_files(files, pipeline_id, pipelines, str(data_dir), split)
        shards = shard_files(shards, pipeline_id, pipelines)  # the same rule for the decoded split's shards
    ops = expand_policies(config.augment, info["image_shape"][2]) if training else ()
    one_hot = one_hot_labels(config)
    deterministic = config.deterministic or not training
    drop_remainder = training and config.drop_remainder

    if decoded:
        images, labels = read_split(data_dir, split, info, shards=shards if pipelines > 1 else None)
        images, labels = tf.constant(images), tf.constant(labels)
        batches = index_batches(len(labels), batch_size, drop_remainder,
                                shuffle_seed=_derive_seed(config.seed, "records") if training else None)
        if training and config.repeat:
            batches = batches.repeat()

        def to_examples(indices):
            return tf.gather(images, indices), tf.gather(labels, indices)
    else:
        records = read_records(files, config.num_parallel_reads, deterministic,
                               shuffle_seed=_derive_seed(config.seed, "files") if training else None)
        if config.cache == "memory":
            records = records.cache()
        elif config.cache == "disk":
            records = records.cache(_cache_path(config.cache_dir, info, split, training, pipeline_id, pipelines))
        if training and config.shuffle_buffer > 1:
            records = records.shuffle(config.shuffle_buffer, seed=_derive_seed(config.seed, "records"),
                                      reshuffle_each_iteration=True)
        if training and config.repeat:
            records = records.repeat()
        batches = records.batch(batch_size, drop_remainder=drop_remainder)
        image_shape = tuple(info["image_shape"])

        def to_examples(serialized):
            return parse_batch(serialized, image_shape)
    batches = decode_batches(batches, to_examples, info, ops, config, one_hot, pipeline_id, deterministic)

    options = tf.data.Options()
    options.deterministic = deterministic
    # Sharded by file above when an input context is given; otherwise a multi-worker
    # strategy shards batches (FILE sharding cannot see through the zip with the seed stream).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if input_context is not None
        else tf.data.experimental.AutoShardPolicy.DATA)
    batches = batches.with_options(options)
    if training and config.data_service:
        batches = batches.apply(tf.data.experimental.service.distribute(
            processing_mode=config.data_service_mode, service=config.data_service))
    if config.prefetch != 0:
        batches = batches.prefetch(tf.data.AUTOTUNE if config.prefetch == AUTOTUNE else config.prefetch)
    return batches


def distributed_dataset(strategy: tf.distribute.Strategy, data_dir: str | os.PathLike, split: str,
                        config: InputConfig, *, training: bool):
    """``build_dataset`` under ``strategy``: per-replica batches, files sharded across input pipelines."""
    return strategy.distribute_datasets_from_function(
        lambda context: build_dataset(data_dir, split, config, training=training, input_context=context))


def decode_batches(batches: tf.data.Dataset, to_examples, info: dict, ops, config: InputConfig, one_hot: bool,
                   pipeline_id: int, deterministic: bool) -> tf.data.Dataset:
    """Map ``batches`` to ``(images, labels)``: ``to_examples`` (a batch of serialized records
    parsed and decoded, or a batch of indices gathered from the decoded split) gives uint8
    images and int64 labels, then ``ops`` augment them.

    Each batch gets one int64 seed from a stream seeded by ``config.seed`` that draws
    anew on each iteration (epoch). The seed is attached before the parallel map, so the
    result does not depend on which thread handles which batch; ``pipeline_id`` salts
    it, so input pipelines on different workers draw differently.
    """
    image_shape = tuple(info["image_shape"])
    num_classes = info["num_classes"]
    parallel = tf.data.AUTOTUNE if config.num_parallel_calls == AUTOTUNE else config.num_parallel_calls
    random_ops = [op for op in ops if op != "standardize"]  # standardize is the model's first layer
    if not random_ops:
        def examples_only(batch):
            images, labels = to_examples(batch)
            return images, (tf.one_hot(labels, num_classes, dtype=tf.float32) if one_hot else labels)

        return batches.map(examples_only, num_parallel_calls=parallel, deterministic=deterministic)

    # cutout erases with the data set mean, so an erased patch normalises to about zero
    fill = [round(v) for v in info["train_statistics"]["mean"]]
    augmenter = Augmenter(random_ops, config.augment_params, image_shape, num_classes, fill, one_hot, xla=config.xla)
    batch_seeds = tf.data.Dataset.random(seed=_derive_seed(config.seed, "augment"), rerandomize_each_iteration=True)
    salt = tf.constant(pipeline_id, tf.int64)

    def examples_and_augment(seed, batch):
        images, labels = to_examples(batch)
        return augmenter(images, labels, tf.stack([seed, salt]))

    return tf.data.Dataset.zip(batch_seeds, batches).map(examples_and_augment, num_parallel_calls=parallel,
                                                         deterministic=deterministic)


def index_batches(num: int, batch_size: int, drop_remainder: bool, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """One pass over the example indices ``0 .. num-1`` in int64 batches of ``batch_size``.

    With ``shuffle_seed``, a new permutation each iteration (pass): its seed is drawn from
    a stream seeded by ``shuffle_seed`` that moves on with every iterator made, like
    ``shuffle(reshuffle_each_iteration=True)``, and the permutation itself is a stateless
    Philox shuffle of that seed, the same on any machine. Without it, in order. The last
    partial batch is kept unless ``drop_remainder``.
    """
    full = num // batch_size * batch_size

    def one_pass(order):
        batches = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:full], [-1, batch_size]))
        if not drop_remainder and full < num:
            batches = batches.concatenate(tf.data.Dataset.from_tensors(order[full:]))
        return batches

    indices = tf.range(num, dtype=tf.int64)
    if shuffle_seed is None:
        return one_pass(indices)
    pass_seeds = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True).take(1)
    return pass_seeds.flat_map(lambda seed: one_pass(
        tf.random.experimental.stateless_shuffle(indices, tf.stack([seed, tf.constant(0, tf.int64)]), alg="philox")))


def read_records(files: list[str], num_parallel_reads: int, deterministic: bool,
                 shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Serialized records of ``files``, read in parallel, interleaved one record per file in turn.

    ``cycle_length`` is the number of files, not AUTOTUNE: its AUTOTUNE value depends on
    the machine's core count and would change the order between machines. How many of
    them are read at once (``num_parallel_reads``, AUTOTUNE by default) does not change
    the order. With ``shuffle_seed`` the file order is shuffled anew each iteration.
    """
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_seed is not None and len(files) > 1:
        names = names.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    reads = tf.data.AUTOTUNE if num_parallel_reads == AUTOTUNE else min(num_parallel_reads, len(files))
    return names.interleave(lambda name: tf.data.TFRecordDataset(name, buffer_size=1 << 20),
                            cycle_length=len(files), block_length=1, num_parallel_calls=reads,
                            deterministic=deterministic)


def parse_batch(serialized: tf.Tensor, image_shape) -> tuple[tf.Tensor, tf.Tensor]:
    """Parse a batch of serialized records into uint8 images ``[n, H, W, C]`` and int64 labels ``[n]``.

    Vectorised: one ``parse_example`` and one ``decode_raw`` for the whole batch. Only the
    features the model needs are parsed (``key`` and ``shape`` were checked up front).
    """
    features = tf.io.parse_example(serialized, {"image": tf.io.FixedLenFeature([], tf.string),
                                                "label": tf.io.FixedLenFeature([], tf.int64)})
    images = tf.reshape(tf.io.decode_raw(features["image"], tf.uint8), [-1, *image_shape])
    return images, features["label"]


def shard_files(files: list, pipeline_id: int, pipelines: int, data_dir: str = "", split: str = "") -> list:
    """The files (or shard indices) input pipeline ``pipeline_id`` of ``pipelines`` reads: every ``pipelines``-th one."""
    if pipelines > len(files):
        raise DataError(f"{data_dir}: split '{split}' has {len(files)} shard file(s), fewer than the "
                        f"{pipelines} input pipelines; prepare it with at least {pipelines} shards")
    return files[pipeline_id::pipelines]


def _derive_seed(seed: int, purpose: str) -> int:
    """A separate 63-bit seed per purpose, so the shuffles and the augmentation draw unrelated streams."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1


def _cache_path(cache_dir: str, info: dict, split: str, training: bool, pipeline_id: int, pipelines: int) -> str:
    """Disk-cache file prefix, named by content so a cache of other data is never read back.

    Training and evaluation get separate files: training caches records in its shuffled
    file order, and evaluation must keep its own fixed order.
    """
    directory = pathlib.Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    mode = "train" if training else "eval"
    name = (f"{info.get('name', 'data')}-{split}-{mode}-{content_fingerprint(info, split)}"
            f"-{pipeline_id}of{pipelines}")
    return str(directory / name)
