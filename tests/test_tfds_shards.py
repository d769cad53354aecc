"""The prepared shards read elsewhere: tensorflow-datasets (``tfds.builder_from_directory``),
plain tf.data with the schema's feature spec, and the TF-free reader in schema.py all give
the same examples in the same order; a directory without INFO_FILE is refused.

The synthetic data sets are written by the real prepare stage, once per module.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from components.data import DataError, get_dataset, schema
from components.data.info import INFO_FILE, OUTPUT_SPLITS, TFDS_INFO_FILE
from components.evaluation.errors import EvaluationError
from tests.conftest import REPO, prepare_synthetic

# fashion_mnist: 3 test examples in 4 shards, so at least one shard is empty.
SYNTHETIC = {
    "cifar10": dict(train=300, test=100, shards={"train": 3, "validation": 1, "test": 2}),
    "fashion_mnist": dict(train=120, test=3, shards={"train": 2, "validation": 2, "test": 4}),
}
IN_FILE_ORDER = tfds.ReadConfig(interleave_cycle_length=1)  # tfds interleaves 16 files by default


@pytest.fixture(scope="module")
def prepare_once(tmp_path_factory):
    """``name -> directory`` of the synthetic data set ``name``, prepared on first use."""
    directories: dict[str, pathlib.Path] = {}

    def prepared_dir(name: str) -> pathlib.Path:
        if name not in directories:
            sizes = SYNTHETIC[name]
            directories[name] = prepare_synthetic(tmp_path_factory.mktemp("tfds") / name, sizes["train"],
                                                  sizes["test"], sizes["shards"], dataset=name)
        return directories[name]

    return prepared_dir


@pytest.fixture(params=sorted(SYNTHETIC))
def prepared(request, prepare_once) -> pathlib.Path:
    return prepare_once(request.param)


def prepare_info(directory: pathlib.Path) -> dict:
    return json.loads((directory / INFO_FILE).read_text())


def as_arrays(batches) -> dict[str, np.ndarray]:
    """Concatenate an iterable of batches (dicts of NumPy arrays) feature by feature."""
    collected: dict[str, list] = {}
    for batch in batches:
        for name, values in batch.items():
            collected.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in collected.items()}


def read_with_tf_data(directory: pathlib.Path, split: str) -> dict[str, np.ndarray]:
    """image, label, key of every example of ``split``: the shards in order, parsed with the schema's spec."""
    info = prepare_info(directory)
    files = [str(directory / shard["file"]) for shard in info["splits"][split]["shards"]]
    shape = info["image_shape"]

    def decode(serialized):
        example = tf.io.parse_example(serialized, schema.tf_feature_spec())
        images = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), [-1, *shape])
        return {"image": images, "label": example["label"], "key": example["key"]}

    return as_arrays(tf.data.TFRecordDataset(files).batch(1024).map(decode).as_numpy_iterator())


def read_with_tfds(directory: pathlib.Path, split: str) -> dict[str, np.ndarray]:
    """image, label, key of every example of ``split`` as tensorflow-datasets reads them, in file order."""
    dataset = tfds.builder_from_directory(str(directory)).as_dataset(
        split=split, batch_size=1024, read_config=IN_FILE_ORDER)
    return as_arrays({name: batch[name] for name in ("image", "label", "key")}
                     for batch in dataset.as_numpy_iterator())


def read_without_tf(directory: pathlib.Path, split: str) -> dict[str, np.ndarray]:
    """image, label, key of every example of ``split`` through schema.iter_examples (no TensorFlow)."""
    examples = [example for shard in prepare_info(directory)["splits"][split]["shards"]
                for example in schema.iter_examples(str(directory / shard["file"]))]
    return {"image": np.stack([e["image"] for e in examples]), "label": np.array([e["label"] for e in examples]),
            "key": np.array([e["key"].encode() for e in examples], dtype=object)}


def assert_same_examples(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], what: str) -> None:
    assert actual["key"].tolist() == expected["key"].tolist(), f"{what}: keys or their order differ"
    np.testing.assert_array_equal(actual["label"], expected["label"], err_msg=f"{what}: labels differ")
    assert actual["image"].dtype == np.uint8, f"{what}: images are {actual['image'].dtype}, expected uint8"
    np.testing.assert_array_equal(actual["image"], expected["image"], err_msg=f"{what}: images differ")


def assert_tfds_reads_what_tf_data_reads(directory: pathlib.Path, splits=OUTPUT_SPLITS) -> None:
    for split in splits:
        expected = read_with_tf_data(directory, split)
        assert len(expected["key"]) == prepare_info(directory)["splits"][split]["examples"]
        assert_same_examples(expected, read_with_tfds(directory, split), f"{directory} {split} (tfds)")


def assert_tfds_metadata_matches_prepare_info(directory: pathlib.Path) -> None:
    info = prepare_info(directory)
    builder = tfds.builder_from_directory(str(directory))
    assert sorted(builder.info.splits) == sorted(OUTPUT_SPLITS)
    for split in OUTPUT_SPLITS:
        tfds_split, ours = builder.info.splits[split], info["splits"][split]
        assert tfds_split.shard_lengths == [shard["examples"] for shard in ours["shards"]], split
        assert tfds_split.num_examples == ours["examples"] and tfds_split.num_shards == ours["num_shards"], split
        assert tfds_split.num_bytes == sum((directory / s["file"]).stat().st_size for s in ours["shards"]), split
    features = builder.info.features
    assert isinstance(features["image"], tfds.features.Tensor)
    assert features["image"].shape == tuple(info["image_shape"]) and features["image"].np_dtype == np.uint8
    assert features["image"].to_json_content().encoding == "bytes"  # raw array bytes, as the encoder writes
    assert builder.info.file_format == tfds.core.FileFormat.TFRECORD
    assert isinstance(features["label"], tfds.features.ClassLabel)
    assert features["label"].names == info["label_names"] == list(get_dataset(info["name"]).label_names)
    assert isinstance(features["key"], tfds.features.Text)
    assert features["shape"].shape == (3,) and features["shape"].np_dtype == np.int64
    assert builder.info.supervised_keys == ("image", "label")


def test_tfds_yields_the_examples_of_plain_tf_data_in_the_same_order(prepared):
    assert_tfds_reads_what_tf_data_reads(prepared)


def test_tfds_split_sizes_shard_lengths_and_features_match_prepare_info(prepared):
    assert_tfds_metadata_matches_prepare_info(prepared)


def test_empty_shards_keep_their_place_in_the_shard_lengths(prepare_once):
    directory = prepare_once("fashion_mnist")
    shard_lengths = tfds.builder_from_directory(str(directory)).info.splits["test"].shard_lengths
    assert len(shard_lengths) == 4 and 0 in shard_lengths and sum(shard_lengths) == 3
    assert_tfds_reads_what_tf_data_reads(directory, ("test",))


def test_as_supervised_gives_image_and_label(prepared):
    expected = read_with_tf_data(prepared, "train")
    dataset = tfds.builder_from_directory(str(prepared)).as_dataset(
        split="train", as_supervised=True, batch_size=1024, read_config=IN_FILE_ORDER)
    images, labels = (np.concatenate(parts) for parts in zip(*dataset.as_numpy_iterator()))
    np.testing.assert_array_equal(images, expected["image"])
    np.testing.assert_array_equal(labels, expected["label"])


def test_the_tf_free_reader_yields_the_same_examples(prepared):
    for split in OUTPUT_SPLITS:
        assert_same_examples(read_with_tf_data(prepared, split), read_without_tf(prepared, split),
                             f"{prepared} {split} (schema.iter_examples)")


def test_the_tf_free_decoder_reads_what_tensorflow_serializes():
    """Records TensorFlow itself writes (not only our encoder's), features in any order."""
    image = np.random.default_rng(0).integers(0, 256, (5, 3, 2), dtype=np.uint8)
    example = tf.train.Example(features=tf.train.Features(feature={
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=image.shape)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[9])),
        "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"test/000042"])),
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
    }))
    decoded = schema.decode_example(example.SerializeToString())
    np.testing.assert_array_equal(decoded["image"], image)
    assert (decoded["label"], decoded["key"], decoded["shape"]) == (9, "test/000042", (5, 3, 2))


def test_the_tf_free_reader_names_the_file_and_record_it_cannot_decode(tmp_path):
    shard = tmp_path / "broken.tfrecord"
    good = schema.encode_example(np.zeros((2, 2, 1), np.uint8), 3, "train/000000")
    with open(shard, "wb") as handle:
        schema.write_tfrecords(handle, [good, b"\x0a\x03abc"])  # a CRC-valid record that is not an Example of ours
    with pytest.raises(DataError, match=rf"{shard}: record 1 is not a tf.train.Example of schema version 1"):
        list(schema.iter_examples(str(shard)))


def test_prepare_writes_its_info_file_last_and_the_driver_loads_no_tensorflow(tmp_path):
    """The completeness marker is the newest file; tfds metadata is written without importing TF."""
    probe = ("import sys, pathlib; from tests.conftest import prepare_synthetic; "
             "import components.data.info, components.data.prepare; "
             "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules)); "
             f"prepare_synthetic(pathlib.Path({str(tmp_path / 'out')!r}), 40, 10, "
             "{'train': 2, 'validation': 1, 'test': 1}); print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False"], result.stdout  # nothing at import; no TF while preparing
    files = [p for p in (tmp_path / "out").iterdir()]
    newest = max(p.stat().st_mtime_ns for p in files)
    assert (tmp_path / "out" / INFO_FILE).stat().st_mtime_ns == newest
    assert {TFDS_INFO_FILE, "features.json", INFO_FILE} <= {p.name for p in files}


def test_a_directory_without_the_info_file_is_not_prepared(prepared, tmp_path):
    from components.evaluation.data import load_split
    from components.inputs import InputConfig, build_dataset, check_prepared

    directory = tmp_path / prepared.name
    shutil.copytree(prepared, directory)
    (directory / INFO_FILE).unlink()  # what is left, tfds metadata included, is not a complete output
    expected = (rf"{directory / INFO_FILE}: not found, so {directory} is not a completely prepared directory "
                rf"\(the {TFDS_INFO_FILE} there is tensorflow-datasets' metadata.*pipeline.prepare --dataset")
    for mode in ("full", "none"):
        with pytest.raises(DataError, match=expected):
            check_prepared(directory, mode=mode)
    with pytest.raises(DataError, match=expected):
        build_dataset(directory, "train", InputConfig(), training=True)
    with pytest.raises(EvaluationError, match=expected):
        load_split(directory)


@pytest.mark.slow
def test_real_cifar10_through_tfds(tmp_path):
    """Every example of every split of the real CIFAR-10, prepared by the stage's library from
    data/raw/cifar10 (placed by `make raw-data`) with params.yaml's defaults, through tfds; the
    test split through the TF-free reader too (about 30 s)."""
    from components.data.prepare import PrepareConfig, prepare_dataset

    raw = REPO / "data" / "raw" / "cifar10"
    if not raw.is_dir():
        pytest.fail(f"{raw}: missing; `make raw-data` places it from ../shared/datasets")
    directory = tmp_path / "cifar10"
    prepare_dataset("cifar10", PrepareConfig(), str(raw), str(directory), log=lambda *_: None)
    assert_tfds_metadata_matches_prepare_info(directory)
    assert_tfds_reads_what_tf_data_reads(directory)
    assert_same_examples(read_with_tf_data(directory, "test"), read_without_tf(directory, "test"),
                         f"{directory} test (schema.iter_examples)")
