"""The conversion's pure steps, and the Beam transforms on a TestPipeline with assert_that."""
import zlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components.data import get_dataset
from components.data.sources import Block
from components.data.schema import iter_examples
from components.data.sources import SyntheticSource
from components.data.transforms import (PIECES_DIR, AssembleShardFn, ConvertParts, carve_validation, channel_histograms,
                                        channel_moments, PieceWriter, stable_hash, train_histogram, unit_interval,
                                        validate_block)


def block(split="train", count=100, labels=None, shape=(28, 28, 1), start=0):
    images = np.arange(count * int(np.prod(shape)), dtype=np.int64).reshape(count, *shape) % 256
    labels = np.arange(count) % 10 if labels is None else np.asarray(labels)
    return Block(split, np.arange(start, start + count, dtype=np.uint64), images.astype(np.uint8),
                 labels.astype(np.int64), f"file-{split}-{start}")


MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment, 2**64 / golden ratio


def splitmix64_mix(z: int) -> int:
    """splitmix64's output function (Steele, Lea & Flood 2014; Vigna's splitmix64.c), on plain ints."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_stable_hash(index: int, salt: str) -> int:
    """The definition in stable_hash's docstring, one integer at a time: the salt's CRC-32
    picks a point of the splitmix64 sequence (that many gamma steps), the index is added."""
    return splitmix64_mix((index + zlib.crc32(salt.encode()) * GOLDEN_GAMMA) & MASK64)


def test_reference_is_splitmix64():
    # The first outputs of splitmix64.c seeded with 0: the published sequence anchors the oracle.
    assert [splitmix64_mix(k * GOLDEN_GAMMA & MASK64) for k in (1, 2, 3)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("salt", ["validation:0", "validation:1", "shard:0train", "shard:7test", ""])
def test_stable_hash_matches_an_independent_splitmix64(salt):
    indices = [0, 1, 2, 9_999, 49_999, 123_456, 2**32 + 5, 2**63, 2**64 - 1]
    assert stable_hash(np.array(indices, np.uint64), salt).tolist() == [reference_stable_hash(i, salt) for i in indices]


def test_stable_hash_is_fixed_and_uniform():
    hashes = stable_hash(np.arange(100_000, dtype=np.uint64), "validation:0")
    # Pinned values (computed once with reference_stable_hash): changing the hash would
    # silently change every split and shard, so a change to both must show here too.
    assert [f"{h:#018x}" for h in hashes[[0, 1, 49_999]].tolist()] == [
        "0x5856ddda54de27e4", "0x32b5240a81bfbc65", "0x860ba05c7f3f9ae8"]
    assert f"{stable_hash(np.array([2**64 - 1], np.uint64), 'validation:0')[0]:#018x}" == "0x926b17ec267948ef"
    assert [f"{h:#018x}" for h in stable_hash(np.array([0, 1, 49_999], np.uint64), "shard:0train").tolist()] == [
        "0x4bf988a5d77bc610", "0xd7d6a668508435c5", "0xf7e6b205a4fa5b3c"]
    fraction = (unit_interval(hashes) < 0.1).mean()
    assert 0.097 < fraction < 0.103
    assert not np.array_equal(hashes, stable_hash(np.arange(100_000, dtype=np.uint64), "validation:1"))


def test_validate_counts_and_reports_out_of_range_labels():
    labels = [0, 1, 10, 3, -1] * 4
    valid, rejected = validate_block(block(count=20, labels=labels), get_dataset("mnist"))
    assert len(valid) == 12 and set(valid.labels.tolist()) == {0, 1, 3}
    assert [(r["origin"], r["count"], r["example_key"]) for r in rejected] == [("file-train-0", 8, "train/000002")]


def test_validate_rejects_wrong_shape_whole_block():
    valid, rejected = validate_block(block(shape=(32, 32, 3)), get_dataset("mnist"))
    assert len(valid) == 0
    assert [r["count"] for r in rejected] == [100] and "expected uint8 (28, 28, 1)" in rejected[0]["reason"]


def carve_directly(blocks):
    return sorted((b.split, k) for original in blocks for b in carve_validation(original, 0.25, seed=0)
                  for k in b.keys())


def test_carve_validation_is_a_stable_function_of_the_key():
    whole = carve_directly([block(count=400), block("test", 50)])
    pieces = carve_directly([block(count=150), block(count=250, start=150), block("test", 50)])
    assert whole == pieces  # block layout does not change the split
    validation = [k for s, k in whole if s == "validation"]
    assert 70 <= len(validation) <= 130
    assert all(k.startswith("train/") for k in validation)
    assert sum(s == "test" for s, _ in whole) == 50
    assert carve_directly([block(count=400)]) != sorted(
        (b.split, k) for b in carve_validation(block(count=400), 0.25, seed=1) for k in b.keys())


def test_convert_parts_writes_every_example_once_and_reports_the_train_histogram(tmp_path):
    spec = get_dataset("mnist")
    source = SyntheticSource(spec, train_examples=300, test_examples=60, seed=3, block_size=70)
    carved = [part for b in source.read_blocks() for part in carve_validation(b, 0.2, seed=0)]
    expected_counts = [(split, sum(len(c) for c in carved if c.split == split)) for split in ("train", "validation", "test")]
    expected_histogram = channel_histograms(np.concatenate([c.images for c in carved if c.split == "train"])).tolist()
    num_shards = {"train": 3, "validation": 1, "test": 2}
    with TestPipeline() as pipeline:
        pieces, reports = pipeline | ConvertParts(source, spec, str(tmp_path), 0.2, num_shards, seed=0, parts=2)
        assert_that(pieces | "Counts" >> beam.Map(lambda item: (item[0][0], item[1]["count"]))
                    | beam.CombinePerKey(sum), equal_to(expected_counts), label="pieces")
        assert_that(reports | beam.Map(lambda r: (r["kind"], r["histogram"])),
                    equal_to([("train_pixel_histogram", expected_histogram)]), label="reports")
    keys = [example["key"] for piece in sorted((tmp_path / PIECES_DIR).iterdir()) for example in iter_examples(str(piece))]
    assert sorted(keys) == sorted(key for c in carved for key in c.keys())  # every example once, nothing else


def test_pixel_histograms_of_parts_give_exact_moments():
    blocks = [block(count=30, shape=(4, 4, 3)), block(count=20, shape=(4, 4, 3), start=30)]
    reports = [{"kind": "train_pixel_histogram", "part": i, "histogram": channel_histograms(b.images).tolist()}
               for i, b in enumerate(blocks)] + [{"kind": "shard"}]
    histogram = train_histogram(reports)
    pixels = np.concatenate([b.images for b in blocks]).reshape(-1, 3).astype(np.float64)
    mean, std = channel_moments(histogram)
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-12)
    assert train_histogram([{"kind": "shard"}]) is None


@pytest.mark.parametrize("shape", [(0, 1), (1, 1), (7, 1), (5, 3, 3), (3, 5, 3), (64, 28, 28, 1), (9, 32, 32, 3),
                                   (3, 3, 2), (5, 3, 4), (2, 1, 5)])
def test_channel_histograms_count_every_byte_of_every_channel(shape):
    images = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected = [np.bincount(images[..., channel].ravel(), minlength=256) for channel in range(shape[-1])]
    np.testing.assert_array_equal(channel_histograms(images), np.array(expected).reshape(shape[-1], 256))


def piece(directory, name, first_index, last_index, payload, labels):
    (directory / PIECES_DIR).mkdir(exist_ok=True)
    (directory / PIECES_DIR / name).write_bytes(payload)
    return {"file": name, "first_index": first_index, "last_index": last_index, "count": len(labels),
            "bytes": len(payload), "class_counts": np.bincount(labels, minlength=3).tolist()}


def test_assemble_joins_pieces_in_index_order(tmp_path):
    early = piece(tmp_path, "a", 999_990, 999_999, b"early", [0, 1])
    late = piece(tmp_path, "b", 1_000_000, 1_000_019, b"late", [2])  # "train/1000000" < "train/999990" as text
    assemble = AssembleShardFn(str(tmp_path), "demo", {"train": 4}, num_classes=3)
    (report,) = assemble.process((("train", 2), [late, None, early]))  # None: the every-shard placeholder
    assert (tmp_path / "demo-train.tfrecord-00002-of-00004").read_bytes() == b"earlylate"
    assert report == {"kind": "shard", "split": "train", "shard": 2, "file": "demo-train.tfrecord-00002-of-00004",
                      "count": 3, "class_counts": [1, 1, 1]}
    (empty,) = assemble.process((("train", 3), [None]))
    assert empty["count"] == 0 and empty["class_counts"] == [0, 0, 0]
    assert (tmp_path / "demo-train.tfrecord-00003-of-00004").read_bytes() == b""


def test_a_retried_join_gives_the_same_shard(tmp_path):
    """A runner may retry the join: after it finished, or after it was cut short while appending.
    On a local disk the first piece is already the shard then; the retry gives the same bytes."""
    first = piece(tmp_path, "a", 0, 9, b"first", [0])
    second = piece(tmp_path, "b", 10, 19, b"second", [1])
    assemble = AssembleShardFn(str(tmp_path), "demo", {"train": 1}, num_classes=3)
    shard = tmp_path / "demo-train.tfrecord-00000-of-00001"
    reports = [list(assemble.process((("train", 0), [first, second]))) for _ in range(2)]
    assert shard.read_bytes() == b"firstsecond" and reports[0] == reports[1]
    shard.write_bytes(b"firstsec")  # cut short while appending the second piece
    list(assemble.process((("train", 0), [second, first])))
    assert shard.read_bytes() == b"firstsecond"
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"a: piece missing, and .*demo-train.tfrecord-00000-of-00001 does "
                                                r"not hold its 5 bytes either"):
        list(assemble.process((("train", 0), [first, second])))


def test_assemble_refuses_pieces_whose_indices_overlap(tmp_path):
    one = piece(tmp_path, "a", 0, 10, b"x", [0])
    other = piece(tmp_path, "b", 5, 19, b"y", [1])
    with pytest.raises(ValueError, match="demo-train.tfrecord-00000-of-00001: pieces a and b overlap"):
        list(AssembleShardFn(str(tmp_path), "demo", {"train": 1}, 3).process((("train", 0), [one, other])))


def test_a_block_across_a_million_examples_gives_pieces_in_index_order(tmp_path):
    """Keys grow a digit at index 1,000,000: the block is written as two runs (framed records of one
    run share a key length), and the shard holds its records in index order, every one once."""
    crossing = block(count=40, start=999_980, shape=(4, 4, 1))
    writer = PieceWriter(str(tmp_path), 0, {"train": 2}, 10, seed=0)
    writer.add(crossing.take(np.arange(25)))
    writer.add(crossing.take(np.arange(25, 40)))
    written = writer.close()
    assert [key for key, _ in written] == [("train", 0), ("train", 1)]  # one piece per shard for the part
    assert sum(piece["count"] for _, piece in written) == 40
    assemble = AssembleShardFn(str(tmp_path), "demo", {"train": 2}, 10)
    keys = []
    for shard in (0, 1):
        list(assemble.process((("train", shard), [piece for key, piece in written if key == ("train", shard)])))
        shard_keys = [example["key"] for example in iter_examples(str(tmp_path / f"demo-train.tfrecord-{shard:05d}-of-00002"))]
        assert [int(key.split("/")[1]) for key in shard_keys] == sorted(int(key.split("/")[1]) for key in shard_keys)
        keys += shard_keys
    assert sorted(keys) == sorted(crossing.keys())


def test_a_part_whose_blocks_go_back_is_an_error_not_a_shuffled_shard(tmp_path):
    writer = PieceWriter(str(tmp_path), 3, {"train": 1}, 10, seed=0)
    writer.add(block(count=10, start=100, shape=(4, 4, 1)))
    with pytest.raises(ValueError, match=r"train-00000-part00003: a block starting at train/000050 \(file-train-50\) "
                                         r"comes after index 109"):
        writer.add(block(count=10, start=50, shape=(4, 4, 1)))
    writer.close()
