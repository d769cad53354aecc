"""Up-front checks of a prepared directory, so bad input fails before training starts.

TensorFlow's own reader reports a corrupt record as ``DataLossError: corrupted record
at 4417`` in the middle of an epoch, without the file's name. :func:`check_prepared`
reads the shards first and raises :class:`~components.data.errors.DataError` naming the
file, the byte offset or record, and what was expected.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import struct
from typing import Iterable, Literal, Sequence

import numpy as np

from components.data import schema
from components.data.errors import DataError
from components.data.info import INFO_FILE, OUTPUT_SPLITS, load_dataset_info


VerifyMode = Literal["full", "counts", "none"]

# Directories already checked in this process, keyed by what the check read (file sizes
# and modification times), so building the train and validation pipelines, or
# rebuilding them, does not re-read gigabytes.
_VERIFIED: dict[tuple, str] = {}  # -> the mode that passed

# Checks in "full" mode parse this many records at a time (bounded memory per call).
_PARSE_CHUNK = 8192


def check_prepared(data_dir: str | os.PathLike, splits: Sequence[str] = OUTPUT_SPLITS,
                   mode: VerifyMode = "full") -> dict:
    """Validate a prepared data set directory and return its INFO_FILE (``prepare_info.json``) as a dict.

    Always checked: the directory exists and is not empty; ``prepare_info.json`` parses,
    has the schema version this code reads, and is self-consistent (image shape, class
    names, statistics, per-split counts); every shard it lists for ``splits`` exists.

    ``mode="counts"`` also walks each shard's record framing (lengths and their
    checksums) to count the records against the info, and parses each shard's first
    record against the schema, shape and label range. ``mode="full"`` reads every
    record: data checksums, counts, and every record's schema, shape, image size and
    label (about a second for CIFAR-10's train split). ``mode="none"`` stops after the
    always-checked part.

    Raises DataError naming the file and the problem.
    """
    directory = pathlib.Path(data_dir)
    if not directory.is_dir():
        raise DataError(f"{directory}: prepared data directory not found; run "
                        f"`python -m pipeline.prepare --dataset {directory.name}` first")
    if not any(directory.iterdir()):
        raise DataError(f"{directory}: directory is empty; expected {INFO_FILE} and TFRecord shards "
                        f"written by `python -m pipeline.prepare --dataset {directory.name}`")
    info = load_dataset_info(directory)
    _check_info(info, directory / INFO_FILE)
    for split in splits:
        if split not in info["splits"]:
            raise DataError(f"{directory / INFO_FILE}: no split '{split}' (has {sorted(info['splits'])})")
    stamps = {split: _stamp(directory, info, [split]) for split in splits}  # every shard exists
    for split in splits:
        key = (str(directory.resolve()), split, stamps[split])
        if mode == "none" or _VERIFIED.get(key) == "full" or _VERIFIED.get(key) == mode:
            continue
        for path, expected in zip(shard_paths(directory, info, split),
                                  (s["examples"] for s in info["splits"][split]["shards"])):
            if mode == "full":
                _check_shard_full(path, expected, info)
            else:
                _check_shard_counts(path, expected, info)
        _VERIFIED[key] = mode
    return info


def shard_paths(data_dir: str | os.PathLike, info: dict, split: str) -> list[str]:
    """The shard files of ``split`` as listed in ``info``, in shard order."""
    return [str(pathlib.Path(data_dir) / shard["file"]) for shard in info["splits"][split]["shards"]]


def num_examples(info: dict, split: str) -> int:
    """Examples in ``split`` according to ``prepare_info.json``."""
    return int(info["splits"][split]["examples"])


def steps_per_epoch(info: dict, split: str, batch_size: int, drop_remainder: bool) -> int:
    """Batches in one pass over ``split``: floor when the last partial batch is dropped, else ceil."""
    examples = num_examples(info, split)
    return examples // batch_size if drop_remainder else math.ceil(examples / batch_size)


def content_fingerprint(info: dict, split: str) -> str:
    """A short hash of what ``split`` holds (names and counts of its shards, schema, shape).

    Used in disk-cache file names, so a cache written from other data is never reused.
    """
    content = {"name": info.get("name"), "schema_version": info.get("schema_version"),
               "image_shape": info.get("image_shape"), "split": info["splits"][split],
               "statistics": info.get("train_statistics")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def _check_info(info: dict, path: pathlib.Path) -> None:
    """Structure and internal consistency of ``prepare_info.json``."""
    version = info.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise DataError(f"{path}: schema_version is {version!r}, this code reads version "
                        f"{schema.SCHEMA_VERSION}; re-run the prepare stage")
    missing = [k for k in ("image_shape", "num_classes", "label_names", "splits", "train_statistics")
               if k not in info]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing}")
    shape = info["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise DataError(f"{path}: image_shape must be [height, width, channels] of positive ints, got {shape!r}")
    if len(info["label_names"]) != info["num_classes"]:
        raise DataError(f"{path}: {len(info['label_names'])} label_names for num_classes {info['num_classes']}")
    stats = info["train_statistics"]
    for name in ("mean", "std"):
        values = stats.get(name)
        if not (isinstance(values, list) and len(values) == shape[2]):
            raise DataError(f"{path}: train_statistics.{name} needs one value per channel "
                            f"({shape[2]}), got {values!r}")
    if min(stats["std"]) <= 0:
        raise DataError(f"{path}: train_statistics.std must be > 0, got {stats['std']}")
    for split, entry in info["splits"].items():
        shards = entry.get("shards", [])
        total = sum(s["examples"] for s in shards)
        if total != entry.get("examples") or len(shards) != entry.get("num_shards"):
            raise DataError(f"{path}: split '{split}' says {entry.get('examples')} examples in "
                            f"{entry.get('num_shards')} shards, but its shard list has {total} in {len(shards)}")


def _stamp(directory: pathlib.Path, info: dict, splits: Iterable[str]) -> tuple:
    """Sizes and modification times of the info file and the shards; raises if a shard is missing."""
    stamp = []
    for path in [str(directory / INFO_FILE)] + [p for split in splits for p in shard_paths(directory, info, split)]:
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path}: shard listed in {directory / INFO_FILE} is missing") from None
        stamp.append((status.st_size, status.st_mtime_ns))
    return tuple(stamp)


def _check_shard_full(path: str, expected: int, info: dict) -> None:
    """Every record: framing and data checksums, count, schema, shape, image size, label."""
    records = list(schema.iter_tfrecords(path))
    if len(records) != expected:
        raise DataError(f"{path}: holds {len(records)} records, {INFO_FILE} says {expected}")
    for start in range(0, len(records), _PARSE_CHUNK):
        _check_records(path, records[start:start + _PARSE_CHUNK], info, first_index=start)


def _check_shard_counts(path: str, expected: int, info: dict) -> None:
    """Record framing (lengths and their checksums) and count; the first record in full."""
    count, first = 0, None
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = 0
        while offset < size:
            header = handle.read(12)
            if len(header) < 12:
                raise DataError(f"{path}: truncated TFRecord header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            if schema.masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
                raise DataError(f"{path}: corrupt TFRecord length checksum at byte {offset}")
            if offset + 12 + length + 4 > size:
                raise DataError(f"{path}: truncated TFRecord at byte {offset} (record of {length} bytes, "
                                f"{size - offset - 12} left)")
            if first is None:
                # the first record is checked in full, data checksum included
                first = next(schema.iter_tfrecords(path, header + handle.read(length + 4)))
            else:
                handle.seek(length + 4, os.SEEK_CUR)
            offset += 12 + length + 4
            count += 1
    if count != expected:
        raise DataError(f"{path}: holds {count} records, {INFO_FILE} says {expected}")
    if first is not None:
        _check_records(path, [first], info, first_index=0)


def _check_records(path: str, records: list[bytes], info: dict, first_index: int) -> None:
    """Parse records with the schema's spec; check shape, image byte count and label range."""
    import tensorflow as tf

    try:
        parsed = tf.io.parse_example(tf.constant(records), schema.tf_feature_spec())
    except tf.errors.InvalidArgumentError as error:
        detail = error.message.splitlines()[0] if error.message else type(error).__name__
        raise DataError(f"{path}: records {first_index}-{first_index + len(records) - 1} include one that "
                        f"does not match the TFRecord schema version {schema.SCHEMA_VERSION} "
                        f"(features {', '.join(schema.FEATURE_KEYS)}): {detail}") from None
    expected_shape = np.array(info["image_shape"])
    shapes = parsed["shape"].numpy()
    bad = np.flatnonzero((shapes != expected_shape).any(axis=1))
    if bad.size:
        raise DataError(f"{path}: record {first_index + bad[0]} has shape {shapes[bad[0]].tolist()}, "
                        f"{INFO_FILE} says image_shape {info['image_shape']}")
    sizes = tf.strings.length(parsed["image"]).numpy()
    bad = np.flatnonzero(sizes != expected_shape.prod())
    if bad.size:
        raise DataError(f"{path}: record {first_index + bad[0]} has {sizes[bad[0]]} image bytes, "
                        f"expected {int(expected_shape.prod())} for shape {info['image_shape']}")
    labels = parsed["label"].numpy()
    bad = np.flatnonzero((labels < 0) | (labels >= info["num_classes"]))
    if bad.size:
        raise DataError(f"{path}: record {first_index + bad[0]} has label {labels[bad[0]]}, "
                        f"expected 0..{info['num_classes'] - 1}")
