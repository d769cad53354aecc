"""The codec writes exactly the bytes TensorFlow writes, and the framing round-trips."""
import numpy as np
import pytest
import tensorflow as tf

from components.data import DataError, schema


def tf_example(image, label, key):
    example = tf.train.Example()
    features = example.features.feature
    features["image"].bytes_list.value.append(image.tobytes())
    features["key"].bytes_list.value.append(key.encode())
    features["label"].int64_list.value.append(int(label))
    features["shape"].int64_list.value.extend(image.shape)
    return example.SerializeToString(deterministic=True)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_encoder_matches_tensorflow_bytes(shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, *shape), dtype=np.uint8)
    labels = np.array([0, 9, 99, 127])
    keys = [f"train/{i:06d}" for i in range(4)]
    records = schema.encode_block(images, labels, keys)
    assert records == [tf_example(i, l, k) for i, l, k in zip(images, labels, keys)]
    assert records[1] == schema.encode_example(images[1], 9, keys[1])
    parsed = tf.io.parse_example(records, schema.tf_feature_spec())
    decoded = tf.reshape(tf.io.decode_raw(parsed["image"], tf.uint8), (-1, *shape))
    np.testing.assert_array_equal(decoded.numpy(), images)
    assert parsed["label"].numpy().tolist() == labels.tolist()
    assert parsed["shape"].numpy().tolist() == [list(shape)] * 4


def test_framed_block_is_what_tensorflow_frames(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    keys = np.array([b"test/000007", b"test/000008", b"test/000010"])  # a bytes array, as blocks give
    path = tmp_path / "block.tfrecord"
    path.write_bytes(schema.framed_block(images, np.array([4, 0, 9]), keys).tobytes())
    expected = [tf_example(i, l, k.decode()) for i, l, k in zip(images, [4, 0, 9], keys)]
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == expected
    with pytest.raises(ValueError, match=r"keys of one block must share a length, got \[10, 11\]"):
        schema.framed_block(images[:2], np.array([1, 2]), ["test/00001", "test/000002"])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 128\)"):  # one varint byte each
        schema.framed_block(images[:2], np.array([1, 200]), ["test/000001", "test/000002"])


def test_tfrecord_framing_round_trip(tmp_path):
    records = [b"", b"a", bytes(range(256)) * 40]
    path = tmp_path / "x.tfrecord"
    with open(path, "wb") as handle:
        schema.write_tfrecords(handle, records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    assert list(schema.iter_tfrecords(str(path))) == records


def test_corrupt_and_truncated_records_are_detected(tmp_path):
    path = tmp_path / "x.tfrecord"
    with open(path, "wb") as handle:
        schema.write_tfrecords(handle, [b"hello world" * 10, b"second"])
    payload = path.read_bytes()
    path.write_bytes(payload[:-7])
    with pytest.raises(DataError, match=r"x.tfrecord: truncated TFRecord at byte 126"):
        list(schema.iter_tfrecords(str(path)))
    flipped = bytearray(payload)
    flipped[20] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="corrupt TFRecord data checksum at byte 0"):
        list(schema.iter_tfrecords(str(path)))
