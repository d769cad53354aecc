"""The TFRecord schema, and a fast, dependency-light codec for it.

Each record is a serialized ``tf.train.Example`` with these features (schema version 1):

========  ============  =====================================================
feature   type          content
========  ============  =====================================================
image     bytes         raw uint8 pixels, row-major, shape ``shape`` (H, W, C)
key       bytes         stable id, ``<source split>/<index in source split>``
label     int64         class index in ``[0, num_classes)``
shape     int64 x 3     (height, width, channels)
========  ============  =====================================================

The encoder writes protobuf wire format directly rather than building
``tf.train.Example`` objects: per-record message construction was the dominant cost of
the conversion, and this keeps TensorFlow out of the Beam workers. Map entries are
written in key order, which is exactly what ``SerializeToString(deterministic=True)``
produces, so the bytes are those TensorFlow itself would write (a test checks this).

TFRecord framing (``uint64 length, masked crc32c(length), data, masked crc32c(data)``)
is written and read here too, with ``google-crc32c``, and :func:`iter_examples` decodes
the records back to NumPy without TensorFlow (for readers outside TF). The same schema
as tensorflow-datasets features is :func:`tfds_features`.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterator, Sequence

import google_crc32c
import numpy as np

from components.data.errors import DataError

SCHEMA_VERSION = 1
FEATURE_KEYS = ("image", "key", "label", "shape")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, varint length, payload."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _map_entry(name: str, feature: bytes) -> bytes:
    # Features.feature map entry: key (field 1), value (field 2), wrapped as field 1.
    return _field(0x0A, _field(0x0A, name.encode()) + _field(0x12, feature))


def _bytes_feature(value: bytes) -> bytes:
    return _field(0x0A, _field(0x0A, value))  # Feature.bytes_list{value: [value]}


def _int64_feature(values: Sequence[int]) -> bytes:
    packed = b"".join(_varint(v & 0xFFFFFFFFFFFFFFFF) for v in values)
    return _field(0x1A, _field(0x0A, packed))  # Feature.int64_list{value: packed}


def encode_example(image: np.ndarray, label: int, key: str) -> bytes:
    """Serialize one image (uint8, H x W x C) as a ``tf.train.Example`` of this schema."""
    features = (_map_entry("image", _bytes_feature(image.tobytes()))
                + _map_entry("key", _bytes_feature(key.encode()))
                + _map_entry("label", _int64_feature((int(label),)))
                + _map_entry("shape", _int64_feature(image.shape)))
    return _field(0x0A, features)


def encode_block(images: np.ndarray, labels: np.ndarray, keys: Sequence[str]) -> list[bytes]:
    """Serialize a block of images that share one shape, as :func:`encode_example` would."""
    if not len(images):
        return []
    return [row.tobytes() for row in framed_block(images, labels, keys)[:, 12:-4]]


def framed_block(images: np.ndarray, labels: np.ndarray, keys: Sequence[str] | np.ndarray) -> np.ndarray:
    """A block's records, TFRecord-framed, as the rows of one uint8 matrix.

    Within a block every record has the same layout: the images share a shape, the keys
    share a length (``<split>/<6 digits>``) and every label fits one varint byte (< 128,
    which covers every data set here). So the serialized Examples are built column by
    column with NumPy instead of message by message, and only the data checksum is
    computed per row. Row ``i`` is exactly ``frame_record(encode_example(images[i], ...))``.
    """
    count = len(images)
    keys = np.asarray(keys, dtype="S")  # a list of str, or already a bytes array
    key_bytes = keys.view(np.uint8).reshape(count, keys.dtype.itemsize)
    if (key_bytes[:, -1] == 0).any():  # NumPy pads the shorter keys with NULs
        raise ValueError(f"keys of one block must share a length, got {sorted({len(k) for k in keys.tolist()})}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= 128:
        raise ValueError(f"labels must be in [0, 128) to share a one-byte varint, got {labels.min()}..{labels.max()}")
    # Encode the first record, then locate its variable parts (pixels, key, label byte).
    first_key = keys[0].decode()
    template = encode_example(images[0], int(labels[0]), first_key)
    pixel_count, key_length = images[0].nbytes, key_bytes.shape[1]
    pixels_at = template.index(images[0].tobytes()) if pixel_count else 0
    key_entry = _map_entry("key", _bytes_feature(keys[0]))
    key_at = template.index(key_entry) + len(key_entry) - key_length
    label_entry = _map_entry("label", _int64_feature((int(labels[0]),)))
    label_at = template.index(label_entry) + len(label_entry) - 1
    assert template[key_at:key_at + key_length] == key_bytes[0].tobytes()
    assert template[label_at] == labels[0]
    # Fill the framed matrix in place, column ranges at a time: one pass over the pixels.
    length = struct.pack("<Q", len(template))
    framed = np.empty((count, 12 + len(template) + 4), np.uint8)
    framed[:, :12] = np.frombuffer(length + struct.pack("<I", masked_crc32c(length)), np.uint8)
    data = framed[:, 12:-4]
    constant = np.frombuffer(template, np.uint8)
    data[:, :pixels_at] = constant[:pixels_at]
    data[:, pixels_at + pixel_count:] = constant[pixels_at + pixel_count:]
    data[:, pixels_at:pixels_at + pixel_count] = images.reshape(count, -1)
    data[:, key_at:key_at + key_length] = key_bytes
    data[:, label_at] = labels
    crcs = np.fromiter((google_crc32c.value(row) for row in data), np.uint32, count)  # rows are contiguous
    framed[:, -4:] = _mask_crc(crcs).astype("<u4").view(np.uint8).reshape(count, 4)
    return framed


def _mask_crc(crc):
    """TFRecord's checksum masking, for a Python int or a NumPy array of uint32."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: crc32c rotated right by 15 bits plus a constant."""
    return _mask_crc(google_crc32c.value(data))


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked crc, the data, the data's masked crc."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def write_tfrecords(handle: BinaryIO, records: Sequence[bytes]) -> None:
    """Write records to an open binary file in TFRecord framing (uncompressed)."""
    handle.write(b"".join(frame_record(r) for r in records))


def iter_tfrecords(path: str, payload: bytes | None = None) -> Iterator[bytes]:
    """Yield the records of a TFRecord file, checking every length and checksum.

    Raises DataError naming the file and the byte offset when the file is truncated or
    a checksum does not match.
    """
    if payload is None:
        try:
            with open(path, "rb") as handle:
                payload = handle.read()
        except OSError as error:
            raise DataError(f"{path}: cannot read TFRecord shard ({error.strerror})") from None
    offset, end = 0, len(payload)
    while offset < end:
        if end - offset < 12:
            raise DataError(f"{path}: truncated TFRecord header at byte {offset}")
        header = payload[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", payload[offset + 8:offset + 12])
        if masked_crc32c(header) != length_crc:
            raise DataError(f"{path}: corrupt TFRecord length checksum at byte {offset}")
        start, stop = offset + 12, offset + 12 + length
        if stop + 4 > end:
            raise DataError(f"{path}: truncated TFRecord at byte {offset} "
                            f"(record of {length} bytes, {end - start} left)")
        data = payload[start:stop]
        (data_crc,) = struct.unpack("<I", payload[stop:stop + 4])
        if masked_crc32c(data) != data_crc:
            raise DataError(f"{path}: corrupt TFRecord data checksum at byte {offset}")
        yield data
        offset = stop + 4


def _read_varint(buffer: bytes, offset: int) -> tuple[int, int]:
    """The varint at ``offset`` and the offset after it."""
    value = shift = 0
    while offset < len(buffer) and shift < 64:
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
    raise ValueError(f"truncated or over-long varint before byte {offset}")


def _wire_fields(message: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` of each field of a serialized protobuf message:
    an int for a varint, the payload bytes for the other wire types."""
    offset = 0
    while offset < len(message):
        tag, offset = _read_varint(message, offset)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, offset = _read_varint(message, offset)
        else:
            if wire_type == 2:
                size, offset = _read_varint(message, offset)
            elif wire_type in (1, 5):  # fixed 64 / 32 bits (a float_list's values)
                size = 8 if wire_type == 1 else 4
            else:
                raise ValueError(f"wire type {wire_type} of field {number} is not used by tf.train.Example")
            if offset + size > len(message):
                raise ValueError(f"field {number} runs past the end of its message ({size} bytes at byte {offset})")
            value, offset = message[offset:offset + size], offset + size
        yield number, wire_type, value


def _int64_values(payload: bytes) -> list[int]:
    """The values of an ``Int64List`` (packed or not), as signed ints."""
    values = []
    for number, wire_type, value in _wire_fields(payload):
        if number != 1:
            continue
        if wire_type == 2:  # packed: varints back to back
            offset = 0
            while offset < len(value):
                item, offset = _read_varint(value, offset)
                values.append(item)
        else:
            values.append(value)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _example_features(record: bytes) -> dict[str, tuple[str, list]]:
    """``name -> (kind, values)`` of a serialized ``tf.train.Example``; kind is bytes, float or int64."""
    kinds = {1: "bytes", 2: "float", 3: "int64"}  # Feature's oneof fields
    features = {}
    for number, _, features_message in _wire_fields(record):
        if number != 1:  # Example.features
            continue
        for entry_number, _, entry in _wire_fields(features_message):
            if entry_number != 1:  # Features.feature map entries
                continue
            fields = {n: v for n, _, v in _wire_fields(entry)}
            name, feature = bytes(fields.get(1, b"")).decode(), fields.get(2, b"")
            for kind_number, _, payload in _wire_fields(feature):
                kind = kinds.get(kind_number)
                if kind == "int64":
                    features[name] = (kind, _int64_values(payload))
                elif kind is not None:
                    features[name] = (kind, [v for n, _, v in _wire_fields(payload) if n == 1])
    return features


def decode_example(record: bytes) -> dict:
    """Decode one record of this schema without TensorFlow.

    Returns ``{"image": uint8 array (H, W, C), "label": int, "key": str, "shape": (H, W, C)}``.
    Raises ValueError saying which feature differs from the schema.
    """
    features = _example_features(record)
    expected = {"image": "bytes", "key": "bytes", "label": "int64", "shape": "int64"}
    found = {name: kind for name, (kind, _) in features.items()}
    if found != expected:
        raise ValueError(f"features {found} are not those of schema version {SCHEMA_VERSION}: {expected}")
    values = {name: vals for name, (_, vals) in features.items()}
    counts = {name: len(vals) for name, vals in values.items()}
    if counts != {"image": 1, "key": 1, "label": 1, "shape": 3}:
        raise ValueError(f"expected 1 image, key and label and 3 shape values, got value counts {counts}")
    shape = tuple(values["shape"])
    image = np.frombuffer(values["image"][0], np.uint8)
    if min(shape) < 1 or image.size != np.prod(shape):
        raise ValueError(f"{image.size} image bytes do not fill shape {shape}")
    return {"image": image.reshape(shape), "label": values["label"][0], "key": values["key"][0].decode(),
            "shape": shape}


def iter_examples(path: str) -> Iterator[dict]:
    """The decoded examples of one shard, in order, without TensorFlow (see :func:`decode_example`).

    Every record's length and checksums are checked (:func:`iter_tfrecords`); a record that
    is not of this schema raises DataError naming the file and the record's index.
    """
    for index, record in enumerate(iter_tfrecords(path)):
        try:
            yield decode_example(record)
        except ValueError as error:
            raise DataError(f"{path}: record {index} is not a tf.train.Example of schema version "
                            f"{SCHEMA_VERSION} ({error})") from None


def tf_feature_spec() -> dict:
    """The ``tf.io.parse_example`` spec of this schema (imports TensorFlow lazily)."""
    import tensorflow as tf

    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "key": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
    }


def tfds_features(image_shape: Sequence[int], label_names: Sequence[str]):
    """This schema as a ``tfds.features.FeaturesDict`` (imports tensorflow-datasets lazily).

    ``image`` is a Tensor with ``Encoding.BYTES``: tfds stores such a tensor as the raw
    bytes of its array, which is exactly what the encoder writes, so tfds decodes our
    records as they are (no PNG). ``label`` is a ClassLabel with the data set's names,
    ``key`` Text, ``shape`` the int64 (H, W, C). Building it does not import TensorFlow.
    """
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=tuple(image_shape), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.BYTES),
        "key": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=list(label_names)),
        "shape": tfds.features.Tensor(shape=(3,), dtype=np.int64),
    })
