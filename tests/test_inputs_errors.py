"""Bad input: each case is a real broken file, and each raises DataError naming the file
before any batch is produced."""
from __future__ import annotations

import json
import pathlib

import pytest
import tensorflow as tf

from components.data import DataError
from components.data.info import INFO_FILE
from components.inputs import InputConfig, build_dataset, check_prepared
from tests.test_inputs import copy_prepared, prepared_dir


@pytest.fixture
def data(tmp_path_factory, tmp_path) -> pathlib.Path:
    return copy_prepared(tmp_path_factory, tmp_path)


def info_of(directory: pathlib.Path) -> dict:
    return json.loads((directory / INFO_FILE).read_text())


def edit_info(directory: pathlib.Path, edit) -> None:
    info = info_of(directory)
    edit(info)
    (directory / INFO_FILE).write_text(json.dumps(info))


def first_shard(directory: pathlib.Path, split: str = "train") -> pathlib.Path:
    return directory / info_of(directory)["splits"][split]["shards"][0]["file"]


def expect_error(directory, pattern: str, modes=("full",), split: str = "train"):
    """check_prepared and build_dataset both raise DataError matching ``pattern`` in each mode."""
    for mode in modes:
        with pytest.raises(DataError, match=pattern):
            check_prepared(directory, (split,), mode=mode)
        with pytest.raises(DataError, match=pattern):
            build_dataset(directory, split, InputConfig(verify_shards=mode), training=True)


def test_missing_and_empty_directories(tmp_path):
    expect_error(tmp_path / "absent", r"absent: prepared data directory not found.*pipeline.prepare")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", r"empty: directory is empty")


def test_shards_without_prepare_info(data):
    (data / INFO_FILE).unlink()
    expect_error(data, rf"{INFO_FILE}: not found")


def test_reading_prepared_data_does_not_import_beam():
    """Training and evaluation processes read prepare_info.json without loading Apache Beam."""
    import subprocess
    import sys

    probe = "import sys, components.inputs; print('apache_beam' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_dataset_info_that_is_not_json_or_of_another_schema_version(data):
    (data / INFO_FILE).write_text("{ not json")
    expect_error(data, rf"{INFO_FILE}: not valid JSON")
    (data / INFO_FILE).write_text("[]")
    expect_error(data, rf"{INFO_FILE}: expected a JSON object, got list")
    (data / INFO_FILE).write_text(json.dumps({"schema_version": 99}))
    expect_error(data, rf"{INFO_FILE}: schema_version is 99, this code reads version 1")


def test_a_listed_shard_that_is_missing(data):
    shard = first_shard(data)
    shard.unlink()
    expect_error(data, rf"{shard.name}: shard listed in .*{INFO_FILE} is missing",
                 modes=("full", "counts", "none"))


def test_a_truncated_shard(data):
    shard = first_shard(data)
    payload = shard.read_bytes()
    shard.write_bytes(payload[:len(payload) - 500])
    expect_error(data, rf"{shard.name}: truncated TFRecord at byte \d+", modes=("full", "counts"))


def test_a_flipped_byte_in_a_record(data):
    shard = first_shard(data)
    payload = bytearray(shard.read_bytes())
    payload[len(payload) // 2] ^= 0x01  # inside some record's pixels
    shard.write_bytes(bytes(payload))
    expect_error(data, rf"{shard.name}: corrupt TFRecord data checksum at byte \d+")
    payload = bytearray(shard.read_bytes())
    payload[3] ^= 0x01  # the first record's length
    shard.write_bytes(bytes(payload))
    expect_error(data, rf"{shard.name}: corrupt TFRecord length checksum at byte 0", modes=("full", "counts"))


def test_records_of_another_example_schema(data):
    shard = first_shard(data, "test")
    count = info_of(data)["splits"]["test"]["shards"][0]["examples"]
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for index in range(count):
            example = tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x89PNG..."])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 10])),
            }))
            writer.write(example.SerializeToString())
    expect_error(data, rf"{shard.name}: records .* does not match the TFRecord schema version 1 .*image",
                 modes=("full", "counts"), split="test")


def test_dataset_info_that_does_not_match_the_shards(data):
    shard = first_shard(data)

    def one_more_in_first_shard(info):
        info["splits"]["train"]["shards"][0]["examples"] += 1
        info["splits"]["train"]["examples"] += 1

    edit_info(data, one_more_in_first_shard)
    expect_error(data, rf"{shard.name}: holds \d+ records, {INFO_FILE} says \d+", modes=("full", "counts"))

    def totals_disagree(info):
        info["splits"]["train"]["examples"] += 5

    edit_info(data, totals_disagree)
    expect_error(data, rf"{INFO_FILE}: split 'train' says \d+ examples")


def test_dataset_info_with_another_image_shape_or_fewer_classes(tmp_path_factory, tmp_path):
    data = copy_prepared(tmp_path_factory, tmp_path)
    edit_info(data, lambda info: info.update(image_shape=[16, 64, 3]))
    expect_error(data, r"train.tfrecord-00000-of-00003: record 0 has shape \[32, 32, 3\], "
                       rf"{INFO_FILE} says image_shape \[16, 64, 3\]", modes=("full", "counts"))
    data = copy_prepared(tmp_path_factory, tmp_path / "second")
    edit_info(data, lambda info: info.update(num_classes=1, label_names=["only"]))
    expect_error(data, r"tfrecord-\d+-of-\d+: record \d+ has label [1-9], expected 0..0")


def test_an_unknown_or_empty_split(tmp_path_factory):
    data = prepared_dir(tmp_path_factory, "cifar10")
    with pytest.raises(DataError, match=r"no split 'holdout' \(has \['test', 'train', 'validation'\]\)"):
        build_dataset(data, "holdout", InputConfig(), training=False)
