"""The tf.data input pipeline on small prepared data sets: batches, evaluation coverage,
seeds, caching, sharding, normalisation, config, the tf.data service and the CLIs.

The data sets are written by the real prepare stage (synthetic source), once per session.
Augmentation ops are tested one by one in test_inputs_augment.py, bad input in
test_inputs_errors.py, MirroredStrategy in test_inputs_distributed.py.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components.config import ConfigError, from_dict
from components.data import DataError, schema
from components.data.info import INFO_FILE
from components.data.prepare import PrepareConfig, SyntheticConfig, prepare_dataset
from components.inputs import (InputConfig, build_dataset, check_prepared, normalization_layer, parse_batch,
                               shard_paths, steps_per_epoch)

SHARDS = {"train": 3, "validation": 1, "test": 2}


def prepared_dir(tmp_path_factory, name: str) -> pathlib.Path:
    """A prepared synthetic data set (about 270 train, 30 validation, 100 test examples), made once per session."""
    out = tmp_path_factory.getbasetemp() / "inputs-data" / name
    if not (out / INFO_FILE).exists():
        config = PrepareConfig(source="synthetic", direct_running_mode="in_memory", direct_num_workers=1,
                               num_shards=SHARDS, synthetic=SyntheticConfig(train_examples=300, test_examples=100))
        prepare_dataset(name, config, raw_dir=str(out.parent / f"raw-{name}"), out_dir=str(out), log=lambda *_: None)
    return out


def copy_prepared(tmp_path_factory, tmp_path, name: str = "cifar10") -> pathlib.Path:
    """A private copy of a prepared data set, to break on purpose."""
    target = tmp_path / name
    shutil.copytree(prepared_dir(tmp_path_factory, name), target)
    return target


def read_split(directory: pathlib.Path, split: str) -> list[tuple[int, bytes]]:
    """(label, image bytes) of every record of a split, straight from the shards."""
    info = json.loads((directory / INFO_FILE).read_text())
    examples = []
    for path in shard_paths(directory, info, split):
        records = list(schema.iter_tfrecords(path))
        if records:
            images, labels = parse_batch(tf.constant(records), info["image_shape"])
            examples += [(int(label), image.tobytes()) for image, label in zip(images.numpy(), labels.numpy())]
    return examples


def collect(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return prepared_dir(tmp_path_factory, "cifar10")


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return prepared_dir(tmp_path_factory, "fashion_mnist")


@pytest.mark.parametrize("cache", ["none", "decoded"])
def test_training_batches_have_shapes_dtypes_and_ranges(cifar, mnist, cache):
    for directory, shape in ((cifar, (32, 32, 3)), (mnist, (28, 28, 1))):
        info = check_prepared(directory)
        config = InputConfig(batch_size=32, cache=cache)
        batches = list(build_dataset(directory, "train", config, training=True))
        assert len(batches) == steps_per_epoch(info, "train", 32, drop_remainder=True)
        for images, labels in batches:
            assert images.dtype == tf.uint8 and images.shape == (32, *shape)  # drop_remainder: all full
            assert labels.dtype == tf.int64 and labels.shape == (32,)
            assert 0 <= labels.numpy().min() and labels.numpy().max() < info["num_classes"]
        pixels = np.concatenate([x.numpy() for x, _ in batches])
        assert pixels.max() > 200  # raw 0-255 pixels: the pipeline does not normalise


def test_float_policies_yield_float32_in_pixel_units(cifar):
    config = InputConfig(batch_size=64, augment=["tutorial", "cutout"])
    images, labels = next(iter(build_dataset(cifar, "train", config, training=True)))
    assert images.dtype == tf.float32 and images.shape == (64, 32, 32, 3)
    assert labels.dtype == tf.int64
    assert 0 <= images.numpy().min() and images.numpy().max() <= 255 and images.numpy().max() > 100


def test_mixup_gives_soft_labels_that_sum_to_one_and_one_hot_in_evaluation(cifar):
    config = InputConfig(batch_size=64, augment=["standard", "mixup"])
    images, labels = next(iter(build_dataset(cifar, "train", config, training=True)))
    assert images.dtype == tf.float32 and labels.dtype == tf.float32 and labels.shape == (64, 10)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-6)
    assert ((labels.numpy() > 0) & (labels.numpy() < 1)).any()  # some rows really are mixed
    _, eval_labels = next(iter(build_dataset(cifar, "validation", config, training=False)))
    assert eval_labels.dtype == tf.float32 and set(np.unique(eval_labels.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(eval_labels.numpy().sum(axis=1), 1.0)
    sparse = dataclasses.replace(config, augment=["standard"], labels="one_hot")
    _, one_hot = next(iter(build_dataset(cifar, "train", sparse, training=True)))
    assert one_hot.shape == (64, 10) and set(np.unique(one_hot.numpy())) == {0.0, 1.0}


@pytest.mark.parametrize("cache", ["none", "decoded"])
def test_evaluation_sees_every_example_once_in_a_stable_order(cifar, mnist, cache):
    # training-only knobs set to what would break evaluation if they leaked into it
    config = InputConfig(batch_size=16, augment=["tutorial", "cutout"], drop_remainder=True, repeat=True,
                         deterministic=False, cache=cache)
    for directory in (cifar, mnist):
        for split in ("validation", "test"):
            expected = read_split(directory, split)
            dataset = build_dataset(directory, split, config, training=False)
            images, labels = collect(dataset)
            assert images.dtype == np.uint8  # no augmentation in evaluation
            seen = [(int(label), image.tobytes()) for image, label in zip(images, labels)]
            assert collections.Counter(seen) == collections.Counter(expected)
            again_images, again_labels = collect(dataset)
            np.testing.assert_array_equal(again_images, images)
            np.testing.assert_array_equal(again_labels, labels)
            # the same order whatever the cache: evaluation batches do not depend on it
            records_path = collect(build_dataset(directory, split, dataclasses.replace(config, cache="none"),
                                                 training=False))
            np.testing.assert_array_equal(images, records_path[0])
    info = check_prepared(cifar)
    assert len(list(build_dataset(cifar, "test", config, training=False))) == steps_per_epoch(
        info, "test", 16, drop_remainder=False)


@pytest.mark.parametrize("cache", ["none", "decoded"])
def test_same_seed_gives_the_same_batches_and_each_epoch_differs(cifar, cache):
    config = InputConfig(batch_size=32, augment=["standard", "cutout"], cache=cache)
    first = build_dataset(cifar, "train", config, training=True)
    second = build_dataset(cifar, "train", config, training=True)
    epoch_1 = collect(first)
    np.testing.assert_array_equal(collect(second)[0], epoch_1[0])
    np.testing.assert_array_equal(collect(second)[1], collect(first)[1])  # epoch 2 too
    epoch_2 = collect(first)
    assert not np.array_equal(epoch_2[0], epoch_1[0])  # reshuffled and redrawn
    other_seed = collect(build_dataset(cifar, "train", dataclasses.replace(config, seed=1), training=True))
    assert not np.array_equal(other_seed[0], epoch_1[0])
    no_xla = collect(build_dataset(cifar, "train", dataclasses.replace(config, xla=False), training=True))
    np.testing.assert_array_equal(no_xla[0], epoch_1[0])  # XLA changes the speed, not the result


def test_repeat_gives_an_endless_stream(cifar):
    config = InputConfig(batch_size=100, repeat=True, augment=["none"])
    info = check_prepared(cifar)
    steps = steps_per_epoch(info, "train", 100, drop_remainder=True)
    assert len(list(build_dataset(cifar, "train", config, training=True).take(3 * steps + 1))) == 3 * steps + 1
    assert steps_per_epoch(info, "train", 100, drop_remainder=False) == -(-info["splits"]["train"]["examples"] // 100)


def test_memory_and_disk_caches_give_the_same_stream(cifar, tmp_path):
    config = InputConfig(batch_size=32, cache_dir=str(tmp_path / "cache"))
    reference = collect(build_dataset(cifar, "train", config, training=True))
    for cache in ("memory", "disk"):
        dataset = build_dataset(cifar, "train", dataclasses.replace(config, cache=cache), training=True)
        np.testing.assert_array_equal(collect(dataset)[0], reference[0])
        collect(dataset)  # epoch 2 reads the cache
    assert len(list((tmp_path / "cache").glob("cifar10-train-train-*-0of1*.index"))) == 1


def test_the_decoded_cache_trains_on_a_new_permutation_of_the_whole_split_each_pass(cifar):
    """cache: decoded: each training pass (drop_remainder off, no augmentation) holds every
    example exactly once, shuffled over the whole split rather than a buffer, in a new order
    each pass, the same passes for the same seed, and it repeats endlessly when asked."""
    config = InputConfig(batch_size=32, cache="decoded", augment=["none"], drop_remainder=False)
    expected = collections.Counter(read_split(cifar, "train"))
    dataset = build_dataset(cifar, "train", config, training=True)
    passes = [read_pairs(dataset) for _ in range(2)]
    for seen in passes:
        assert collections.Counter(seen) == expected
    in_file_order = read_pairs(build_dataset(cifar, "train", config, training=False))
    assert passes[0] != in_file_order and passes[1] != passes[0]
    assert read_pairs(build_dataset(cifar, "train", config, training=True)) == passes[0]
    batches = [len(labels) for _, labels in build_dataset(cifar, "train", config, training=True)]
    assert batches == [32] * (sum(expected.values()) // 32) + [sum(expected.values()) % 32]  # the rest kept last
    endless = build_dataset(cifar, "train", dataclasses.replace(config, repeat=True), training=True)
    assert len(list(endless.take(3 * len(batches) + 1))) == 3 * len(batches) + 1


@pytest.mark.parametrize("cache", ["none", "decoded"])
def test_input_context_gives_per_replica_batches_and_disjoint_files(cifar, cache):
    config = InputConfig(batch_size=32, cache=cache)
    parts = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=4)
        train_images, _ = next(iter(build_dataset(cifar, "train", config, training=True, input_context=context)))
        assert train_images.shape[0] == 8  # 32 global over 4 replicas
        parts.append(read_pairs(build_dataset(cifar, "test", config, training=False, input_context=context)))
    assert not set(parts[0]) & set(parts[1])
    assert collections.Counter(parts[0] + parts[1]) == collections.Counter(read_split(cifar, "test"))
    too_many = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0, num_replicas_in_sync=4)
    with pytest.raises(DataError, match="2 shard file.*fewer than the 3 input pipelines"):
        build_dataset(cifar, "test", config, training=False, input_context=too_many)


def read_pairs(dataset) -> list[tuple[int, bytes]]:
    images, labels = collect(dataset)
    return [(int(label), image.tobytes()) for image, label in zip(images, labels)]


def test_normalization_layer_uses_the_recorded_statistics_exactly_once(cifar, mnist, tmp_path):
    import keras

    for directory in (cifar, mnist):
        info = check_prepared(directory)
        images, _ = collect(build_dataset(directory, "train", InputConfig(augment=["none"]), training=False))
        assert images.dtype == np.uint8 and images.max() > 1  # the pipeline hands over raw pixels
        layer = normalization_layer(info)
        normalised = layer(images).numpy()
        assert normalised.dtype == np.float32
        np.testing.assert_allclose(normalised.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
        np.testing.assert_allclose(normalised.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
        stats = info["train_statistics"]
        np.testing.assert_allclose(normalised[0], (images[0] - np.array(stats["mean"])) / np.array(stats["std"]),
                                   rtol=1e-4, atol=1e-4)
    # The layer is saved with the model: a reloaded model takes raw uint8 and normalises identically.
    model = keras.Sequential([keras.Input((32, 32, 3), dtype="uint8"), normalization_layer(check_prepared(cifar))])
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(images[:4], verbose=0), model.predict(images[:4], verbose=0))


def test_standardize_policy_moves_normalisation_to_per_image(mnist):
    info = check_prepared(mnist)
    config = InputConfig(augment=["standardize"])
    layer = normalization_layer(info, config)
    images, _ = next(iter(build_dataset(mnist, "train", config, training=True)))
    assert images.dtype == tf.uint8 and images.numpy().max() > 1  # not standardised in the pipeline
    out = layer(images).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    np.testing.assert_allclose(out, tf.image.per_image_standardization(images).numpy(), atol=1e-4)


def test_config_comes_from_params_and_rejects_bad_values():
    config = from_dict(InputConfig, {"batch_size": 64, "cache": "memory", "augment": ["standard", "cutout"],
                                     "augment_params": {"cutout_size": 8, "mixup_alpha": 0.4}}, where="inputs")
    assert config.batch_size == 64 and config.augment_params.cutout_size == 8
    assert config.num_parallel_calls == -1 and config.prefetch == -1  # AUTOTUNE by default
    bad = [({"batch_sise": 64}, "unknown key"), ({"cache": "ssd"}, "expected one of"),
           ({"augment": ["standrad"]}, "unknown augment policy"),
           ({"augment": ["none", "cutout"]}, "cannot be combined"),
           ({"batch_size": 0}, "batch_size must be"), ({"num_parallel_calls": 0}, "AUTOTUNE"),
           ({"augment_params": {"flip_probability": 2}}, "flip_probability"),
           ({"augment_params": {"scale_min": 1.2, "scale_max": 1.1}}, "scale_min"),
           ({"augment": ["mixup"], "labels": "sparse"}, "needs labels: auto or one_hot"),
           ({"cache": "decoded", "data_service": "grpc://localhost:5050"}, "with data_service use cache: none")]
    for params, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_dict(InputConfig, params, where="inputs")


def test_tf_data_service_runs_the_training_pipeline(cifar):
    """Batches come from the service's workers: in parallel_epochs mode each of two workers
    produces a whole (identically seeded) epoch, so every batch of the local pipeline
    arrives exactly twice; read locally, each would arrive once."""
    import time

    service = tf.data.experimental.service
    dispatcher = service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    deadline = time.monotonic() + 60
    while dispatcher._num_workers() < 2:  # workers register asynchronously
        assert time.monotonic() < deadline, f"{dispatcher._num_workers()} of 2 workers registered after 60 s"
        time.sleep(0.05)
    info = check_prepared(cifar)
    local = InputConfig(batch_size=32)
    config = dataclasses.replace(local, data_service=dispatcher.target, data_service_mode="parallel_epochs")

    def batch_keys(dataset):
        return collections.Counter(x.numpy().tobytes() + y.numpy().tobytes() for x, y in dataset)

    served = list(build_dataset(cifar, "train", config, training=True))
    assert all(x.shape == (32, 32, 32, 3) and x.dtype == tf.uint8 for x, _ in served)
    expected = batch_keys(build_dataset(cifar, "train", local, training=True))
    assert sum(expected.values()) == steps_per_epoch(info, "train", 32, drop_remainder=True)
    assert batch_keys(served) == collections.Counter({key: 2 * count for key, count in expected.items()})
    del workers, dispatcher


def test_inspect_writes_a_labelled_grid(cifar, mnist, tmp_path):
    from pipeline import inspect as inspect_cli

    for directory in (cifar, mnist):
        out = tmp_path / f"{directory.name}.png"
        assert inspect_cli.main(["--dataset", directory.name, "--data-dir", str(directory), "--out", str(out),
                                 "--augment", "standard,mixup", "--count", "12",
                                 "--params", str(tmp_path / "absent.yaml")]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert inspect_cli.main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"),
                             "--params", str(tmp_path / "absent.yaml")]) == 1


def test_benchmark_runs_and_reports_both_sides(cifar):
    import argparse

    from components.benchmarks import input as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    result = bench.run(parser.parse_args(["--dataset", "cifar10", "--data-dir", str(cifar), "--images", "256",
                                          "--repeats", "1", "--batch-size", "32"]))
    assert result["ours_images_per_s"] > 0 and result["baseline_images_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["ours_images_per_s"] / result["baseline_images_per_s"], rel=0.01)
    assert "every epoch" in result["ours_source"]
    assert result["ratio_decoded"] == pytest.approx(result["ours_decoded_images_per_s"] / result["baseline_images_per_s"],
                                                    rel=0.01)
