"""The TF-free split reader and the device-resident batches, on the TensorFlow and JAX backends.

* :func:`components.inputs.arrays.read_split` against the tf.data evaluation pipeline
  (order and content) on a synthetic data set written by the real prepare stage, and
  its errors for broken shards.
* :class:`components.inputs.device.DeviceBatches` / ``DeviceAugmenter``: the ``check_*``
  functions below need only Keras and NumPy. Each runs here under the default
  (TensorFlow) backend, and all of them once more in one subprocess with
  ``KERAS_BACKEND=jax`` and TensorFlow's import blocked before any other import
  (``tests.conftest.NO_TENSORFLOW``), so a TensorFlow import there would fail the run. The ops are compared with
  augment.py's TensorFlow ops on identical draws (the reference is computed here and
  handed to the JAX process in a file).

Everything is tiny (6-64 images of a few pixels); the file costs ~40 s of CPU, mostly imports
and XLA compiles, with the JAX subprocess running beside the TensorFlow tests.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import traceback
import warnings

import keras
import numpy as np
import pytest

from components.data import schema
from components.data.errors import DataError
from components.data.info import INFO_FILE
from components.inputs.arrays import interleave_positions, read_split
from components.inputs.config import AugmentParams
from components.inputs.device import (DEVICE_OPS, DeviceAugmenter, DeviceBatches, generator, mix_partners,
                                      sample_draws)
from components.inputs.policies import UINT8_OPS
from tests.conftest import NO_TENSORFLOW

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARDS = {"train": 3, "validation": 2, "test": 2}


def _backend_is_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


# ---------------------------------------------------------------------------------------
# read_split (TensorFlow backend: the reference is tf.data itself)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> pathlib.Path:
    """A synthetic CIFAR-10-shaped data set from the real prepare stage (uneven shards)."""
    from conftest import prepare_synthetic

    out = tmp_path_factory.mktemp("device-inputs") / "cifar10"
    return prepare_synthetic(out, train=150, test=50, shards=SHARDS)


def _info(directory: pathlib.Path) -> dict:
    return json.loads((directory / INFO_FILE).read_text())


def _tf_evaluation_pass(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every example of ``split`` through ``build_dataset(..., training=False)``."""
    from components.inputs import InputConfig, build_dataset

    dataset = build_dataset(directory, split, InputConfig(batch_size=16, verify_shards="none"), training=False)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def _rewrite_shard(path: pathlib.Path, edit) -> None:
    """Rewrite one shard with the schema's own encoder: ``edit(index, example) -> bytes | None`` per record."""
    examples = list(schema.iter_examples(str(path)))
    records = []
    for index, example in enumerate(examples):
        record = edit(index, example)
        records.append(record if record is not None
                       else schema.encode_example(example["image"], example["label"], example["key"]))
    with open(path, "wb") as handle:
        schema.write_tfrecords(handle, records)


def _broken_copy(prepared: pathlib.Path, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A private copy of the data set and its second train shard, to break on purpose."""
    target = tmp_path / "cifar10"
    shutil.copytree(prepared, target)
    return target, target / _info(target)["splits"]["train"]["shards"][1]["file"]


def test_interleave_positions_are_round_robin_with_exhausted_files_dropping_out():
    # files of 3, 1 and 2 records: a0 b0 c0 | a1 c1 | a2
    assert [p.tolist() for p in interleave_positions([3, 1, 2])] == [[0, 3, 5], [1], [2, 4]]
    assert [p.tolist() for p in interleave_positions([0, 2])] == [[], [0, 1]]


@pytest.mark.skipif(not _backend_is_tensorflow(), reason="compares with tf.data")
def test_read_split_matches_the_tf_data_evaluation_pipeline(prepared):
    info = _info(prepared)
    counts = {split: [s["examples"] for s in info["splits"][split]["shards"]] for split in SHARDS}
    assert any(len(set(c)) > 1 for c in counts.values()), f"shards should be uneven to test the order: {counts}"
    for split in SHARDS:
        images, labels = read_split(prepared, split)
        expected_images, expected_labels = _tf_evaluation_pass(prepared, split)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert images.shape == (info["splits"][split]["examples"], *info["image_shape"])
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(images, expected_images)
    again, _ = read_split(prepared, "train", info=info)  # info given: same result
    np.testing.assert_array_equal(again, read_split(prepared, "train")[0])


@pytest.mark.skipif(not _backend_is_tensorflow(), reason="compares with tf.data")
def test_read_split_decodes_records_of_another_layout_one_by_one(prepared, tmp_path):
    # Keys of varying length change the byte layout, so these records miss the fast path.
    directory, shard = _broken_copy(prepared, tmp_path)
    _rewrite_shard(shard, lambda i, ex: schema.encode_example(ex["image"], ex["label"], "k" * (1 + i % 7)))
    images, labels = read_split(directory, "train")
    expected_images, expected_labels = _tf_evaluation_pass(directory, "train")
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(images, expected_images)


def test_read_split_names_the_file_of_a_corrupted_byte(prepared, tmp_path):
    directory, shard = _broken_copy(prepared, tmp_path)
    payload = bytearray(shard.read_bytes())
    payload[len(payload) // 2] ^= 0x01  # inside some record's pixels
    shard.write_bytes(bytes(payload))
    with pytest.raises(DataError, match=rf"{shard.name}: corrupt TFRecord data checksum at byte \d+"):
        read_split(directory, "train")


@pytest.mark.parametrize("bad_label", [10, 200, -1])  # 200 and -1 need multi-byte varints (decoded one by one)
def test_read_split_names_the_record_with_a_label_out_of_range(prepared, tmp_path, bad_label):
    directory, shard = _broken_copy(prepared, tmp_path)
    _rewrite_shard(shard, lambda i, ex: schema.encode_example(ex["image"], bad_label, ex["key"]) if i == 3 else None)
    with pytest.raises(DataError, match=rf"{shard.name}: record 3 has label {bad_label}, expected 0\.\.9"):
        read_split(directory, "train")


def test_read_split_names_the_record_with_another_shape_or_schema(prepared, tmp_path):
    directory, shard = _broken_copy(prepared, tmp_path)
    _rewrite_shard(shard, lambda i, ex: schema.encode_example(np.zeros((16, 16, 3), np.uint8), 1, ex["key"])
                   if i == 2 else None)
    with pytest.raises(DataError, match=rf"{shard.name}: record 2 has shape \[16, 16, 3\], {INFO_FILE} says "
                                        r"image_shape \[32, 32, 3\]"):
        read_split(directory, "train")
    directory, shard = _broken_copy(prepared, tmp_path / "schema")
    _rewrite_shard(shard, lambda i, ex: b"\x0a\x03abc" if i == 4 else None)  # a message, not an Example
    with pytest.raises(DataError, match=rf"{shard.name}: record 4 is not a tf.train.Example of schema version 1"):
        read_split(directory, "train")


def test_read_split_names_a_shard_whose_record_count_differs(prepared, tmp_path):
    directory, shard = _broken_copy(prepared, tmp_path)
    records = list(schema.iter_tfrecords(str(shard)))
    with open(shard, "wb") as handle:
        schema.write_tfrecords(handle, records[:-1])
    with pytest.raises(DataError, match=rf"{shard.name}: holds {len(records) - 1} records, "
                                        rf"{INFO_FILE} says {len(records)}"):
        read_split(directory, "train")


# ---------------------------------------------------------------------------------------
# DeviceBatches / DeviceAugmenter checks: Keras and NumPy only, run on both backends.


def tiny_split(count: int, shape=(8, 8, 3), num_classes: int = 4, seed: int = 0, ids: bool = False):
    """Random uint8 images and labels; with ``ids`` every pixel of image i is i (to recover it)."""
    rng = np.random.default_rng(seed)
    if ids:
        images = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, *shape)).copy()
        return images, np.arange(count) % num_classes
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8), rng.integers(0, num_classes, count)


def host(x) -> np.ndarray:
    return np.asarray(x)


def batches_of(dataset: DeviceBatches, indices) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(host(x), host(y)) for x, y in (dataset[i] for i in indices)]


def check_training_epochs_cover_distinct_examples():
    images, labels = tiny_split(50, ids=True)
    dataset = DeviceBatches(images, labels, num_classes=4, batch_size=8, training=True, seed=1)
    steps = dataset.steps_per_epoch
    assert steps == 50 // 8 and len(dataset) == steps and dataset.num_batches is None  # endless for Keras
    orders = []
    for epoch in range(3):
        batches = batches_of(dataset, range(epoch * steps, (epoch + 1) * steps))
        ids = np.concatenate([x[:, 0, 0, 0] for x, _ in batches]).astype(np.int64)
        assert len(ids) == steps * 8 and len(np.unique(ids)) == len(ids), f"epoch {epoch} repeats examples"
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels[ids])
        assert all(y.dtype == np.int64 for _, y in batches)
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1]), "each epoch should reshuffle"
    # without drop_remainder an epoch is every example once, the last batch the remainder
    dataset = DeviceBatches(images, labels, num_classes=4, batch_size=8, training=True, drop_remainder=False)
    assert dataset.steps_per_epoch == 7
    for epoch in range(2):
        batches = batches_of(dataset, range(epoch * 7, (epoch + 1) * 7))
        assert [len(x) for x, _ in batches] == [8] * 6 + [2]
        assert sorted(np.concatenate([x[:, 0, 0, 0] for x, _ in batches]).tolist()) == list(range(50))


# One augmenter config for the seed and resume checks, so they share one compiled function.
STREAM = dict(num_classes=4, batch_size=8, training=True, one_hot=True,
              ops=("random_crop", "flip_horizontal", "brightness", "cutout", "mixup"))


def check_same_seed_gives_the_same_batches_and_another_seed_others():
    images, labels = tiny_split(40)

    def stream(seed):
        return batches_of(DeviceBatches(images, labels, seed=seed, **STREAM), range(7))

    first, again, other = stream(5), stream(5), stream(6)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(x1, x3) for (x1, _), (x3, _) in zip(first, other))
    assert first[0][0].dtype == np.float32 and first[0][1].dtype == np.float32  # brightness, mixup: float


def check_resuming_at_an_epoch_gives_the_uninterrupted_stream():
    images, labels = tiny_split(40)
    uninterrupted = DeviceBatches(images, labels, seed=2, **STREAM)
    resumed = DeviceBatches(images, labels, seed=2, start_epoch=2, **STREAM)
    steps = uninterrupted.steps_per_epoch
    for j in range(2 * steps):  # the whole resumed epoch 2 and the next one
        (x1, y1), (x2, y2) = batches_of(uninterrupted, [2 * steps + j])[0], batches_of(resumed, [j])[0]
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert resumed.epoch_and_step(0) == (2, 0) and resumed.epoch_and_step(steps + 1) == (3, 1)


def check_evaluation_keeps_the_stored_order_and_every_example():
    images, labels = tiny_split(45)
    for one_hot in (False, True):
        dataset = DeviceBatches(images, labels, num_classes=4, batch_size=16, training=False, one_hot=one_hot,
                                ops=("random_crop", "brightness"))  # no augmentation in evaluation
        assert dataset.num_batches == 3 == len(dataset) == dataset.steps_per_epoch
        batches = batches_of(dataset, range(3))
        assert [len(x) for x, _ in batches] == [16, 16, 13]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        assert x.dtype == np.uint8
        np.testing.assert_array_equal(x, images)
        if one_hot:
            assert y.dtype == np.float32
            np.testing.assert_array_equal(y, np.eye(4, dtype=np.float32)[labels])
        else:
            assert y.dtype == np.int64
            np.testing.assert_array_equal(y, labels)
        assert len(list(dataset)) == 3  # Python iteration stops too
        try:
            dataset[3]
        except IndexError:
            pass
        else:
            raise AssertionError("batch 3 of 3 should raise IndexError")


def _fastest_apply(augmenter: DeviceAugmenter):
    """The compiled ``apply`` on JAX (its eager mode compiles every primitive), the uncompiled
    ``transform`` on TensorFlow (an XLA compile there costs ~1 s); the same keras.ops either way."""
    if keras.backend.backend() == "jax":
        return augmenter.apply
    return lambda images, labels, draws: augmenter.transform(keras.ops.convert_to_tensor(images), labels, draws)


def check_mixup_gives_soft_rows_that_sum_to_one():
    images, labels = tiny_split(32)
    dataset = DeviceBatches(images, labels, num_classes=4, batch_size=32, training=True, ops=("mixup",),
                            one_hot=True, params=AugmentParams(mixup_alpha=0.4))
    x, y = batches_of(dataset, [0])[0]
    assert y.dtype == np.float32 and y.shape == (32, 4)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert ((y > 1e-3) & (y < 1 - 1e-3)).any(), "mixup should give soft labels"
    try:
        DeviceBatches(images, labels, num_classes=4, batch_size=8, training=True, ops=("mixup",))
    except ValueError as error:
        assert "one-hot" in str(error)
    else:
        raise AssertionError("mixup with sparse labels should be refused")


def check_crop_pads_with_zeros_within_its_reach():
    # A constant-255 image cropped from its zero-padded version shows only 0 and 255, the
    # 255s an (H - |dy|) x (W - |dx|) window at the border the shift moves away from.
    height, width, padding = 9, 11, 3
    images = np.full((32, height, width, 1), 255, np.uint8)
    dataset = DeviceBatches(images, np.zeros(32, np.int64), num_classes=1, batch_size=32, training=True,
                            ops=("random_crop",), params=AugmentParams(crop_padding=padding), seed=4)
    x = host(dataset[0][0])[..., 0]
    assert x.dtype == np.uint8
    draws = dataset.augmenter.draw(generator(4, "augment", 0, 0), 32)  # the draws batch 0 used
    assert set(np.unique(x).tolist()) <= {0, 255}
    shifted = 0
    for image, dy, dx in zip(x, draws["shift_y"], draws["shift_x"]):
        assert abs(dy) <= padding and abs(dx) <= padding
        expected = np.zeros((height, width), bool)
        expected[max(0, -dy):min(height, height - dy), max(0, -dx):min(width, width - dx)] = True
        np.testing.assert_array_equal(image == 255, expected)
        shifted += bool(dy or dx)
    assert shifted > 16, "most crops should move the window"


def check_flips_mirror_exactly():
    images, labels = tiny_split(32, shape=(5, 7, 3))
    dataset = DeviceBatches(images, labels, num_classes=4, batch_size=32, training=True, seed=7,
                            ops=("flip_horizontal", "flip_vertical"))
    x = host(dataset[0][0])
    assert x.dtype == np.uint8
    draws = dataset.augmenter.draw(generator(7, "augment", 0, 0), 32)  # the draws batch 0 used
    for image, source, flip_h, flip_v in zip(x, images[dataset.batch_indices(0)], draws["flip_h"], draws["flip_v"]):
        expected = source[:, ::-1] if flip_h else source
        np.testing.assert_array_equal(image, expected[::-1] if flip_v else expected)
    combos = set(zip(draws["flip_h"].tolist(), draws["flip_v"].tolist()))
    assert len(combos) == 4, f"32 images should see every flip combination, saw {combos}"
    never = DeviceAugmenter(("flip_horizontal",), AugmentParams(flip_probability=0.0), (5, 7, 3), 4, (0,), False)
    always = DeviceAugmenter(("flip_vertical",), AugmentParams(flip_probability=1.0), (5, 7, 3), 4, (0,), False)
    assert not never.draw(np.random.default_rng(0), 100)["flip_h"].any()
    assert always.draw(np.random.default_rng(0), 100)["flip_v"].all()


def check_host_draws_stay_in_range_and_each_op_has_its_own_stream():
    params = AugmentParams(crop_padding=3, max_shift=2, rotation_degrees=20, cutout_probability=0.5)
    ops = [op for op in DEVICE_OPS]
    draws = sample_draws(ops, params, np.random.default_rng(0), 500, (9, 7, 3))
    assert np.abs(draws["shift_y"]).max() <= 5 and np.abs(draws["shift_x"]).max() == 5  # crop 3 + shift 2
    assert draws["shift_y"].dtype == np.int32 and draws["flip_h"].dtype == bool
    assert params.scale_min <= draws["scale"].min() and draws["scale"].max() <= params.scale_max
    assert np.abs(draws["angle"]).max() <= math.radians(20) + 1e-6
    assert np.abs(draws["brightness"]).max() <= params.brightness * 255 + 1e-3
    assert 0 <= draws["cutout_y"].min() and draws["cutout_y"].max() < 9 and draws["cutout_x"].max() < 7
    assert 0.4 < draws["cutout_on"].mean() < 0.6 and 0.4 < draws["flip_h"].mean() < 0.6
    assert draws["mix_shift"].shape == () and 1 <= draws["mix_shift"] < 500  # partners: a roll of the batch
    assert sorted(mix_partners(draws["mix_shift"], 500).tolist()) == list(range(500))
    assert ((draws["mix_weight"] >= 0) & (draws["mix_weight"] <= 1)).all()
    alone = sample_draws(["random_crop", "hue"], params, np.random.default_rng(0), 500, (9, 7, 3))
    more = sample_draws(["random_crop", "flip_horizontal", "hue"], params, np.random.default_rng(0), 500, (9, 7, 3))
    np.testing.assert_array_equal(alone["shift_y"], more["shift_y"])  # switching flip on changes no other draw
    np.testing.assert_array_equal(alone["hue"], more["hue"])


class UnitScale(keras.layers.Layer):
    """uint8 pixels to float32 in [0, 1]."""

    def call(self, images):
        return keras.ops.cast(images, "float32") / 255.0


def check_fit_consumes_the_endless_stream_and_evaluate_the_finite_one():
    images, labels = tiny_split(64, num_classes=4)

    class Recording(DeviceBatches):
        """Notes which batches Keras asks for (the batches themselves are DeviceBatches')."""

        def __getitem__(self, index):
            self.seen.append(index)
            return super().__getitem__(index)

    train = Recording(images, labels, num_classes=4, batch_size=16, training=True,
                      ops=("random_crop", "flip_horizontal"), seed=3)
    train.seen = []
    steps = train.steps_per_epoch
    keras.utils.set_random_seed(0)
    # uint8 -> [0, 1] in a plain layer, so the model needs nothing but the backend.
    model = keras.Sequential([keras.Input((8, 8, 3), dtype="uint8"), UnitScale(), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # shuffle=False: the stream is shuffled already (Keras warns that it ignores shuffle otherwise)
        history = model.fit(train, epochs=2, steps_per_epoch=steps, shuffle=False, verbose=0)
        loss = model.evaluate(DeviceBatches(images, labels, num_classes=4, batch_size=24, training=False),
                              verbose=0)
    messages = [str(w.message) for w in caught if "keras" in w.filename or "ran out of data" in str(w.message)]
    assert not messages, f"Keras warned: {messages}"
    assert len(history.history["loss"]) == 2 and all(np.isfinite(history.history["loss"]))
    assert np.isfinite(loss)
    # the stream is not restarted between epochs: epoch 2 trains on batches steps..2*steps-1
    assert set(range(2 * steps)) <= set(train.seen), f"asked for {sorted(set(train.seen))}"
    assert train.epoch_and_step(steps) == (1, 0)


CHECKS = [name for name in list(globals()) if name.startswith("check_")]


# Ops compared with augment.py's TensorFlow ops on identical draws: each op alone and together.
REFERENCE_PARAMS = AugmentParams(crop_padding=2, max_shift=1, flip_probability=0.5, scale_min=0.8, scale_max=1.25,
                                 rotation_degrees=40, brightness=0.3, contrast=0.4, saturation=0.5, hue=0.2,
                                 cutout_size=0, cutout_probability=0.7, mixup_alpha=0.4)
REFERENCE_CASES = {op: ((op,), (9, 7, 3)) for op in DEVICE_OPS}  # name -> (ops, image shape)
REFERENCE_CASES.update({
    "every_op": (DEVICE_OPS, (9, 7, 3)),  # as training runs them: together, in OPS order
    "gray": (("random_shift", "flip_vertical", "random_scale", "brightness", "contrast", "cutout"), (9, 7, 1)),
})
REFERENCE_FILL = (120.4, 60.6, 200.5)


def reference_augmenter(name: str) -> DeviceAugmenter:
    ops, shape = REFERENCE_CASES[name]
    return DeviceAugmenter(ops, REFERENCE_PARAMS, shape, 5, REFERENCE_FILL[:shape[2]], one_hot="mixup" in ops)


def check_ops_match_the_reference(reference: dict):
    """Each op alone and all together give augment.py's dtype and values on the same draws.

    ``reference``: case -> {images, labels, draws, expected_images, expected_labels}.
    uint8 exactly for the integer ops, float32 in [0, 255] to float rounding for the rest.
    """
    for name, case in reference.items():
        augmenter = reference_augmenter(name)
        # the case with every op compiled on TensorFlow too, as training compiles it
        apply = augmenter.apply if name == "every_op" else _fastest_apply(augmenter)
        images, labels = apply(case["images"], case["labels"].astype(np.int32), case["draws"])
        images, labels = host(images), host(labels)
        expected = case["expected_images"]
        expected_dtype = np.uint8 if set(augmenter.ops) <= UINT8_OPS else np.float32
        assert images.dtype == expected.dtype == expected_dtype, \
            f"{name}: {images.dtype}, augment.py {expected.dtype}, expected {np.dtype(expected_dtype)}"
        # in [0, 255] up to float rounding (mixup of two 255s may give 255.00002, as in augment.py)
        assert images.shape == case["images"].shape and 0 <= images.min() and images.max() <= 255.001, name
        if expected.dtype == np.uint8:
            np.testing.assert_array_equal(images, expected, err_msg=name)
        else:
            np.testing.assert_allclose(images, expected, atol=2e-3, rtol=0, err_msg=name)  # 0-255 units
        if augmenter.one_hot:
            np.testing.assert_allclose(labels, case["expected_labels"], atol=1e-6, err_msg=name)


def load_reference(path: str | os.PathLike) -> dict:
    """The reference cases as the ``reference`` fixture stores them (``case/field[/draw]`` keys)."""
    with np.load(path) as stored:
        reference: dict = {}
        for key in stored.files:
            name, field, *draw = key.split("/")
            case = reference.setdefault(name, {"draws": {}})
            if field == "draws":
                case["draws"][draw[0]] = stored[key]
            else:
                case[field] = stored[key]
    return reference


def run_all_checks(reference_path: str) -> dict[str, str]:
    """Every check: name -> "ok" or its traceback (the JAX subprocess reports with this)."""
    results = {}
    checks = [(name, globals()[name]) for name in CHECKS]
    checks.append(("check_ops_match_the_reference",
                   lambda: check_ops_match_the_reference(load_reference(reference_path))))
    for name, run in checks:
        try:
            run()
            results[name] = "ok"
        except BaseException:  # noqa: BLE001 -- reported to the parent, which fails the test
            results[name] = traceback.format_exc()
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, pathlib.Path]:
    """Each case's inputs and draws, and augment.py's TensorFlow result; also written to an .npz."""
    import tensorflow as tf

    from components.inputs import augment

    reference, stored = {}, {}
    for index, name in enumerate(REFERENCE_CASES):
        augmenter = reference_augmenter(name)
        images, labels = tiny_split(6, augmenter.image_shape, num_classes=5, seed=index)
        draws = augmenter.draw(np.random.default_rng(100 + index), len(images))
        tf_draws = {k: tf.constant(v) for k, v in draws.items() if k != "mix_shift"}
        if "mix_shift" in draws:  # the same pairs as a permutation, as augment.py takes them
            tf_draws["mix_partner"] = tf.constant(mix_partners(draws["mix_shift"], len(images)), tf.int32)
        expected_images, expected_labels = augment.apply_draws(
            tf.constant(images), tf.constant(labels, tf.int64), tf_draws,
            augmenter.ops, augmenter.params, augmenter.fill, augmenter.num_classes, augmenter.one_hot)
        case = {"images": images, "labels": labels, "draws": draws,
                "expected_images": expected_images.numpy(), "expected_labels": expected_labels.numpy()}
        reference[name] = case
        stored.update({f"{name}/{field}": value for field, value in case.items() if field != "draws"})
        stored.update({f"{name}/draws/{key}": value for key, value in draws.items()})
    path = tmp_path_factory.mktemp("device-reference") / "reference.npz"
    np.savez(path, **stored)
    return reference, path


_JAX_RUNNER = """
import json, os
sys.path[:0] = [os.path.join({repo!r}, "tests"), {repo!r}]
import keras
assert keras.backend.backend() == "jax", keras.backend.backend()
import test_device_inputs as module
results = module.run_all_checks({reference!r})
loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "tensorflow" and v is not None)
results["no_tensorflow_import"] = "ok" if not loaded else f"TensorFlow modules loaded: {{loaded[:5]}}"
with open({out!r}, "w") as handle:
    json.dump(results, handle)
"""


@pytest.fixture(scope="module", autouse=True)
def jax_process(request, reference, tmp_path_factory):
    """Every check, once, in a JAX-backend subprocess that cannot import TensorFlow.

    Started before this module's first test when any JAX test is selected, so it runs
    while the TensorFlow side does; :func:`jax_results` waits for it.
    """
    if not any(item.module is request.module and "on_jax" in item.name for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("device-jax") / "results.json"
    code = NO_TENSORFLOW + _JAX_RUNNER.format(repo=str(REPO), reference=str(reference[1]), out=str(out))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    yield process, out
    if process.poll() is None:  # a test failed before waiting on it
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def jax_results(jax_process) -> dict[str, str]:
    """The JAX subprocess's results: check name -> "ok" or the traceback."""
    process, out = jax_process
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and out.exists(), f"JAX subprocess failed:\n{stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.mark.skipif(not _backend_is_tensorflow(), reason="this process runs the TensorFlow side")
@pytest.mark.parametrize("check", CHECKS)
def test_device_batches_on_tensorflow(check):
    globals()[check]()


@pytest.mark.skipif(not _backend_is_tensorflow(), reason="the reference is augment.py on TensorFlow")
def test_device_ops_match_augment_py_on_tensorflow(reference):
    check_ops_match_the_reference(reference[0])


@pytest.mark.parametrize("check", CHECKS + ["check_ops_match_the_reference", "no_tensorflow_import"])
def test_device_batches_on_jax_without_tensorflow(check, jax_results):
    assert jax_results[check] == "ok", jax_results[check]
