"""The Beam transforms, each on a TestPipeline with assert_that."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components.data import get_dataset
from components.data.sources import Block
from components.data.transforms import (PIECES_DIR, AssembleShardFn, CarveValidation, CarveValidationFn, PixelHistogramFn,
                                        ValidateExamples, channel_histograms, channel_moments, stable_hash, unit_interval)


def block(split="train", count=100, labels=None, shape=(28, 28, 1), start=0):
    images = np.arange(count * int(np.prod(shape)), dtype=np.int64).reshape(count, *shape) % 256
    labels = np.arange(count) % 10 if labels is None else np.asarray(labels)
    return Block(split, np.arange(start, start + count, dtype=np.uint64), images.astype(np.uint8),
                 labels.astype(np.int64), f"file-{split}-{start}")


def test_stable_hash_is_fixed_and_uniform():
    hashes = stable_hash(np.arange(100_000, dtype=np.uint64), "validation:0")
    # Pinned values: changing the hash would silently change every split.
    assert hashes[:2].tolist() == stable_hash(np.array([0, 1], np.uint64), "validation:0").tolist()
    fraction = (unit_interval(hashes) < 0.1).mean()
    assert 0.097 < fraction < 0.103
    assert not np.array_equal(hashes, stable_hash(np.arange(100_000, dtype=np.uint64), "validation:1"))


def test_validate_counts_and_reports_out_of_range_labels():
    labels = [0, 1, 10, 3, -1] * 4
    with TestPipeline() as pipeline:
        valid, rejected = (pipeline | beam.Create([block(count=20, labels=labels)])
                           | ValidateExamples(get_dataset("mnist")))
        assert_that(valid | "Sizes" >> beam.Map(len), equal_to([12]), label="valid")
        assert_that(rejected | "Summaries" >> beam.Map(lambda r: (r["origin"], r["count"], r["example_key"])),
                    equal_to([("file-train-0", 8, "train/000002")]), label="rejected")


def test_validate_rejects_wrong_shape_whole_block():
    with TestPipeline() as pipeline:
        valid, rejected = (pipeline | beam.Create([block(shape=(32, 32, 3))]) | ValidateExamples(get_dataset("mnist")))
        assert_that(valid | beam.Map(len), equal_to([0]), label="valid")
        assert_that(rejected | beam.Map(lambda r: "expected uint8 (28, 28, 1)" in r["reason"]),
                    equal_to([True]), label="reason")


def carve_directly(blocks):
    carve = CarveValidationFn(0.25, seed=0)
    return sorted((b.split, k) for original in blocks for b in carve.process(original) for k in b.keys())


def test_carve_validation_is_a_stable_function_of_the_key():
    whole = carve_directly([block(count=400), block("test", 50)])
    pieces = carve_directly([block(count=150), block(count=250, start=150), block("test", 50)])
    assert whole == pieces  # block layout does not change the split
    validation = [k for s, k in whole if s == "validation"]
    assert 70 <= len(validation) <= 130
    assert all(k.startswith("train/") for k in validation)
    assert sum(s == "test" for s, _ in whole) == 50
    with TestPipeline() as pipeline:
        carved = pipeline | beam.Create([block(count=400), block("test", 50)]) | CarveValidation(0.25, seed=0)
        assert_that(carved | beam.FlatMap(lambda b: [(b.split, k) for k in b.keys()]), equal_to(whole))


def test_pixel_histogram_gives_exact_moments():
    blocks = [block(count=30, shape=(4, 4, 3)), block(count=20, shape=(4, 4, 3), start=30)]
    combine = PixelHistogramFn(3)
    accumulators = [combine.add_input(combine.create_accumulator(), b) for b in blocks]
    histogram = combine.extract_output(combine.merge_accumulators(accumulators))["histogram"]
    pixels = np.concatenate([b.images for b in blocks]).reshape(-1, 3).astype(np.float64)
    mean, std = channel_moments(histogram)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-12)


@pytest.mark.parametrize("shape", [(0, 1), (1, 1), (7, 1), (5, 3, 3), (3, 5, 3), (64, 28, 28, 1), (9, 32, 32, 3),
                                   (3, 3, 2), (5, 3, 4), (2, 1, 5)])
def test_channel_histograms_count_every_byte_of_every_channel(shape):
    images = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected = [np.bincount(images[..., channel].ravel(), minlength=256) for channel in range(shape[-1])]
    np.testing.assert_array_equal(channel_histograms(images), np.array(expected).reshape(shape[-1], 256))


def piece(directory, name, first_key, last_key, payload, labels):
    (directory / PIECES_DIR).mkdir(exist_ok=True)
    (directory / PIECES_DIR / name).write_bytes(payload)
    return {"file": name, "first_key": first_key, "last_key": last_key, "count": len(labels),
            "class_counts": np.bincount(labels, minlength=3).tolist()}


def test_assemble_joins_pieces_in_key_order(tmp_path):
    early = piece(tmp_path, "a", "train/000000", "train/000009", b"early", [0, 1])
    late = piece(tmp_path, "b", "train/000010", "train/000019", b"late", [2])
    assemble = AssembleShardFn(str(tmp_path), "demo", {"train": 4}, num_classes=3)
    (report,) = assemble.process((("train", 2), [late, None, early]))  # None: the every-shard placeholder
    assert (tmp_path / "demo-train.tfrecord-00002-of-00004").read_bytes() == b"earlylate"
    assert report == {"kind": "shard", "split": "train", "shard": 2, "file": "demo-train.tfrecord-00002-of-00004",
                      "count": 3, "class_counts": [1, 1, 1]}
    (empty,) = assemble.process((("train", 3), [None]))
    assert empty["count"] == 0 and empty["class_counts"] == [0, 0, 0]
    assert (tmp_path / "demo-train.tfrecord-00003-of-00004").read_bytes() == b""


def test_assemble_refuses_pieces_whose_keys_overlap(tmp_path):
    one = piece(tmp_path, "a", "train/000000", "train/000010", b"x", [0])
    other = piece(tmp_path, "b", "train/000005", "train/000019", b"y", [1])
    with pytest.raises(ValueError, match="demo-train.tfrecord-00000-of-00001: pieces a and b overlap"):
        list(AssembleShardFn(str(tmp_path), "demo", {"train": 1}, 3).process((("train", 0), [one, other])))
