"""A prepared split read into memory as NumPy arrays, without TensorFlow.

The device-resident input (:mod:`components.inputs.device`) keeps a whole split on the
accelerator, so it needs the split as one uint8 array first, on any Keras backend. This
module reads the shards with the TF-free codec of :mod:`components.data.schema` and
checks every record as ``check_prepared(..., mode="full")`` does: framing and data
checksums, record count per shard, schema, image shape and label range. Errors are
:class:`~components.data.errors.DataError` naming the file, the record and what was
expected, in the style of :mod:`components.inputs.shards`.

Order: the order of the tf.data evaluation pipeline (``build_dataset(...,
training=False)``), which interleaves the split's shard files in shard order with
``cycle_length`` = number of files and ``block_length=1``: one record from each file in
turn, a file that runs out dropping out of the rotation. So an example sits at the same
index here as in an evaluation pass through tf.data.

Speed: decoding a ``tf.train.Example`` in Python costs ~60 us, 3 s for CIFAR-10's train
split. The records of a shard almost always share one byte layout (the prepare stage
writes them with :func:`components.data.schema.framed_block`): the same bytes everywhere
except the pixels, the key text and the one-byte label varint. Each shard's first record
is decoded in full and taken as the template; every other record of the same length is
compared with it outside those three byte ranges, all records at once with NumPy, and
its pixels and label are then sliced out of the record matrix. A record equal to a
valid record outside pixels, key text and a label byte below 0x80 decodes to that
record's schema and shape with its own pixels and label, so the check is the same as
decoding it. Records that differ anywhere else (another layout, a two-byte label) are
decoded one by one with :func:`components.data.schema.decode_example`.
"""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

from components.data import schema
from components.data.errors import DataError
from components.data.info import INFO_FILE
from components.inputs.shards import check_prepared, num_examples, shard_paths


def read_split(data_dir: str | os.PathLike, split: str, info: dict | None = None,
               shards: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every example of ``split`` in the prepared ``data_dir``: uint8 images ``[N, H, W, C]``, int64 labels ``[N]``.

    ``info``: the directory's ``prepare_info.json`` as a dict; read and checked with
    ``check_prepared(data_dir, (split,), mode="none")`` when None. The examples come in
    the order of the tf.data evaluation pipeline (round-robin over the shards, one
    record per file in turn). Every record is checked (checksums, count, schema, shape,
    label); a bad one raises DataError naming the file and the record.

    ``shards``: only these shard files (indices into the split's list), interleaved the
    same way: one worker's part of the split when several train together.
    """
    if info is None:
        info = check_prepared(data_dir, (split,), mode="none")
    if split not in info["splits"]:
        raise DataError(f"{pathlib.Path(data_dir) / INFO_FILE}: no split '{split}' (has {sorted(info['splits'])})")
    shape = tuple(info["image_shape"])
    counts = [int(shard["examples"]) for shard in info["splits"][split]["shards"]]
    total = num_examples(info, split)
    if sum(counts) != total:
        raise DataError(f"{pathlib.Path(data_dir) / INFO_FILE}: split '{split}' says {total} examples, "
                        f"its shards {sum(counts)}")
    paths = shard_paths(data_dir, info, split)
    if shards is not None:
        if not shards or any(not 0 <= i < len(paths) for i in shards):
            raise ValueError(f"shards must be indices of split '{split}''s {len(paths)} shard files, got {list(shards)}")
        paths, counts = [paths[i] for i in shards], [counts[i] for i in shards]
        total = sum(counts)
    images = np.empty((total, *shape), np.uint8)  # preallocated: each shard is written into place
    labels = np.empty(total, np.int64)
    for path, position in zip(paths, interleave_positions(counts)):
        shard_images, shard_labels = read_shard(path, len(position), info)
        images[position] = shard_images
        labels[position] = shard_labels
    return images, labels


def interleave_positions(counts: list[int]) -> list[np.ndarray]:
    """Where each shard's records land in a round-robin interleave (one record per file in turn).

    ``counts``: records per shard, in shard order. Returns one int64 array per shard:
    the output index of each of its records. Record ``r`` of shard ``s`` comes after the
    first ``min(c_t, r)`` records of every shard ``t`` (earlier rounds), and after record
    ``r`` of the shards before ``s`` that still have one (this round).
    """
    sizes = np.asarray(counts, np.int64)
    positions = []
    for s, count in enumerate(counts):
        r = np.arange(count, dtype=np.int64)
        earlier_rounds = np.minimum(sizes[:, None], r[None, :]).sum(axis=0)
        this_round = (sizes[:s, None] > r[None, :]).sum(axis=0)
        positions.append(earlier_rounds + this_round)
    return positions


def read_shard(path: str, expected: int, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[n, H, W, C]`` uint8 and labels ``[n]`` int64 of one shard, in file order, every record checked.

    ``expected``: the record count ``prepare_info.json`` gives for the shard.
    """
    records = list(schema.iter_tfrecords(path))  # framing and data checksums of every record
    if len(records) != expected:
        raise DataError(f"{path}: holds {len(records)} records, {INFO_FILE} says {expected}")
    shape = tuple(info["image_shape"])
    images = np.empty((len(records), *shape), np.uint8)
    labels = np.empty(len(records), np.int64)
    if not records:
        return images, labels
    first = _decode(path, records[0], 0, info)
    layout = _template_layout(records[0], first)
    slow = np.ones(len(records), bool)  # records still to decode one by one
    if layout is not None:
        same_length = np.flatnonzero([len(record) == len(records[0]) for record in records])
        matrix = np.frombuffer(b"".join(records[i] for i in same_length), np.uint8).reshape(len(same_length), -1)
        template, fixed, pixels, label_at = layout
        match = (matrix[:, fixed] == template[fixed]).all(axis=1) & (matrix[:, label_at] < 0x80)
        rows = same_length[match]
        images[rows] = matrix[match, pixels].reshape(-1, *shape)
        labels[rows] = matrix[match, label_at]
        slow[rows] = False
    for index in np.flatnonzero(slow):
        example = first if index == 0 else _decode(path, records[index], int(index), info)
        images[index], labels[index] = example["image"], example["label"]
    bad = np.flatnonzero((labels < 0) | (labels >= info["num_classes"]))
    if bad.size:
        raise DataError(f"{path}: record {bad[0]} has label {labels[bad[0]]}, "
                        f"expected 0..{info['num_classes'] - 1}")
    return images, labels


def _decode(path: str, record: bytes, index: int, info: dict) -> dict:
    """One record decoded with the schema's codec, its shape checked against ``info``."""
    try:
        example = schema.decode_example(record)
    except ValueError as error:
        raise DataError(f"{path}: record {index} is not a tf.train.Example of schema version "
                        f"{schema.SCHEMA_VERSION} ({error})") from None
    if list(example["shape"]) != list(info["image_shape"]):
        raise DataError(f"{path}: record {index} has shape {list(example['shape'])}, "
                        f"{INFO_FILE} says image_shape {info['image_shape']}")
    return example


def _template_layout(record: bytes, example: dict):
    """``(template, fixed, pixels, label_at)`` for records laid out like ``record``, or None.

    ``template``: the record as a uint8 array; ``fixed``: a bool mask of the bytes every
    record of this layout shares (all but pixels, key text and label byte); ``pixels``:
    the slice of the pixel bytes; ``label_at``: the label varint's one byte. None when
    ``record`` is not exactly what :func:`schema.encode_example` writes for its content,
    or its label needs more than one varint byte: then every record is decoded in full.

    The variable byte ranges are found by encoding the same example twice with one part
    changed (pixels 0 vs 255, key 'a...' vs 'b...', label 0 vs 1) and seeing which bytes
    differ, so this depends only on the encoder, not on its internals.
    """
    image, label, key = example["image"], example["label"], example["key"]
    key_length = len(key.encode())
    if not 0 <= label < 0x80 or key_length != len(key) or schema.encode_example(image, label, key) != record:
        return None

    def differing(a: bytes, b: bytes) -> np.ndarray:
        return np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))

    pixel_bytes = differing(schema.encode_example(np.zeros_like(image), label, key),
                            schema.encode_example(np.full_like(image, 255), label, key))
    key_bytes = differing(schema.encode_example(image, label, "a" * key_length),
                          schema.encode_example(image, label, "b" * key_length))
    label_bytes = differing(schema.encode_example(image, 0, key), schema.encode_example(image, 1, key))
    if pixel_bytes.size != image.size or label_bytes.size != 1 or key_bytes.size != key_length:
        return None
    if image.size and pixel_bytes[-1] - pixel_bytes[0] + 1 != image.size:
        return None  # not one contiguous run
    template = np.frombuffer(record, np.uint8)
    fixed = np.ones(template.size, bool)
    fixed[pixel_bytes] = fixed[key_bytes] = fixed[label_bytes] = False
    start = int(pixel_bytes[0]) if image.size else 0
    return template, fixed, slice(start, start + image.size), int(label_bytes[0])
