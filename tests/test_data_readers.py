"""Readers on small archives written in the publishers' exact formats, and on broken ones."""
import gzip

import numpy as np
import pytest

from components.data import DataError, get_dataset, list_datasets, readers
from components.data.sources import ArchiveSource, SyntheticSource, contiguous_parts
from tests.conftest import write_idx_images, write_idx_labels, write_tar_gz


def test_known_datasets_are_described_once():
    assert list_datasets() == ["cifar10", "cifar100", "fashion_mnist", "mnist"]
    assert get_dataset("cifar100").num_classes == 100
    assert len(set(get_dataset("cifar100").label_names)) == 100
    assert get_dataset("fashion_mnist").label_names[0] == "T-shirt/top"
    assert get_dataset("mnist").image_shape == (28, 28, 1)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match=r"unknown data set 'cifar1'.*cifar10, cifar100.*Did you mean"):
        get_dataset("cifar1")


def test_idx_reader_round_trip(mnist_dir):
    directory, data = mnist_dir
    source = ArchiveSource(get_dataset("mnist"), str(directory), block_size=128)
    blocks = list(source.read_blocks())
    train = [b for b in blocks if b.split == "train"]
    assert [len(b) for b in train] == [128, 128, 44]
    np.testing.assert_array_equal(np.concatenate([b.images for b in train]), data["train"][0])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in train]), data["train"][1])
    assert train[1].keys()[0] == "train/000128"


def test_cifar_reader_round_trip(cifar10_dir):
    directory, data = cifar10_dir
    blocks = list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())
    train = [b for b in blocks if b.split == "train"]
    np.testing.assert_array_equal(np.concatenate([b.images for b in train]), data["train"][0])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in train]), data["train"][1])
    # Offsets continue across the five batch files, so keys are positions in the split.
    assert train[-1].keys()[-1] == "train/000199"


def examples_of(blocks):
    """key -> (split, image bytes, label) over all blocks; fails on a key read twice."""
    examples = {}
    for block in blocks:
        for key, image, label in zip(block.keys(), block.images, block.labels.tolist()):
            assert key not in examples, f"{key} read twice"
            examples[key] = (block.split, image.tobytes(), label)
    return examples


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_parts_read_the_whole_source_once(dataset, mnist_dir, cifar10_dir):
    directory = (mnist_dir if dataset == "mnist" else cifar10_dir)[0]
    source = ArchiveSource(get_dataset(dataset), str(directory), block_size=32)
    whole = examples_of(source.read_blocks())
    for count in (1, 2, 3, 10):
        parts = source.parts(count)
        assert len(parts) == min(count, len(source.all_units()))
        assert examples_of(block for part in parts for block in part.read_blocks()) == whole


def test_key_array_is_the_keys_as_bytes():
    from components.data.sources import Block

    for indices in ([0, 7, 123456, 999999], [], [1_000_000, 3]):  # the last: past six digits, still exact
        block = Block("validation", np.array(indices, np.uint64), np.zeros((len(indices), 2, 2, 1), np.uint8),
                      np.zeros(len(indices), np.int64), "origin", source_split="train")
        assert block.key_array().tolist() == [key.encode() for key in block.keys()]
    assert block.keys() == ["train/1000000", "train/000003"]


def test_contiguous_parts_weigh_skipping_against_converting():
    members = ("b1", "b2", "b3", "b4", "b5", "test")
    # A second part has to inflate the members before its own: give it fewer of them.
    assert contiguous_parts(members, 2, skip_cost=0.5) == [("b1", "b2", "b3", "b4"), ("b5", "test")]
    assert contiguous_parts(members, 2, skip_cost=0.0) == [("b1", "b2", "b3"), ("b4", "b5", "test")]
    assert contiguous_parts(members, 1, skip_cost=0.5) == [members]
    assert contiguous_parts(members, 9, skip_cost=0.5) == [(m,) for m in members]


def test_a_part_stops_reading_after_its_members(cifar10_dir):
    directory, _ = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    payload = archive.read_bytes()  # random pixels: members take about a sixth of the bytes each
    archive.write_bytes(payload[: len(payload) * 9 // 10])  # cut inside test_batch.bin
    first, last = ArchiveSource(get_dataset("cifar10"), str(directory)).parts(2)
    assert len(examples_of(first.read_blocks())) == 4 * 40  # data_batch_1-4, read before the cut
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: truncated or corrupt tar.gz"):
        list(last.read_blocks())


def test_cifar100_uses_fine_label():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[1] = 7
    record = np.concatenate([np.array([[3, 42], [5, 99]], np.uint8), images.transpose(0, 3, 1, 2).reshape(2, -1)], 1)
    parsed_images, labels = readers.parse_cifar_records(record.tobytes(), 2, "x")
    assert labels[:, 1].tolist() == [42, 99]
    assert parsed_images[1].max() == 7


def test_archive_checksum_is_recorded(mnist_dir):
    directory, _ = mnist_dir
    info = ArchiveSource(get_dataset("mnist"), str(directory)).describe()
    assert {f["verified"] for f in info["files"]} == {"content-validated"}
    assert all(len(f["sha256"]) == 64 for f in info["files"])


@pytest.mark.parametrize("problem", ["magic", "count", "truncated-gzip", "not-gzip", "missing"])
def test_bad_idx_files_name_the_file(tmp_path, mnist_dir, problem):
    directory, _ = mnist_dir
    target = directory / "train-images-idx3-ubyte.gz"
    if problem == "magic":
        write_idx_images(target, np.zeros((3, 28, 28)), magic=0x00000802)
        expected = "IDX magic 0x00000802, expected 0x00000803"
    elif problem == "count":
        write_idx_labels(directory / "train-labels-idx1-ubyte.gz", np.zeros(5))
        expected = "300 images but .* has 5 labels"
    elif problem == "truncated-gzip":
        target.write_bytes(target.read_bytes()[:2000])
        expected = "not a valid gzip file"
    elif problem == "not-gzip":
        target.write_bytes(b"this is not gzip at all")
        expected = "not a valid gzip file"
    else:
        target.unlink()
        expected = "file not found"
    with pytest.raises(DataError, match=expected) as caught:
        list(ArchiveSource(get_dataset("mnist"), str(directory)).read_blocks())
    assert "idx" in str(caught.value)


def test_idx_payload_size_must_match_header():
    with pytest.raises(DataError, match="header says 2 images of 28x28"):
        readers.parse_idx_images(gzip.decompress(gzip.compress(
            bytes.fromhex("00000803000000020000001c0000001c") + bytes(100))), "f.gz")


def test_truncated_and_incomplete_cifar_archives(cifar10_dir):
    directory, _ = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    payload = archive.read_bytes()
    archive.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: truncated or corrupt tar.gz"):
        list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())
    write_tar_gz(archive, {"cifar-10-batches-bin/data_batch_1.bin": bytes(3073)})
    with pytest.raises(DataError, match=r"lacks member\(s\).*data_batch_2.bin"):
        list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())
    write_tar_gz(archive, {f"cifar-10-batches-bin/{n}": bytes(3000) for n in
                           [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]})
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR records"):
        list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())


def test_synthetic_source_is_deterministic_and_in_schema():
    spec = get_dataset("cifar10")
    first = list(SyntheticSource(spec, 50, 20, seed=3).read_blocks())
    second = list(SyntheticSource(spec, 50, 20, seed=3).read_blocks())
    assert [b.split for b in first] == ["train", "test"]
    assert first[0].images.shape == (50, 32, 32, 3) and first[0].images.dtype == np.uint8
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    # Learnable: images of a class are closer to their own template than to the others.
    templates = SyntheticSource(spec, 1, 1, seed=3).templates()
    block = first[0]
    distances = ((block.images[:, None].astype(float) - templates[None]) ** 2).mean(axis=(2, 3, 4))
    assert (distances.argmin(axis=1) == block.labels).mean() > 0.9
