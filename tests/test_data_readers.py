"""Readers on small archives written in the publishers' exact formats, and on broken ones."""
import gzip
import io
import tarfile
import threading

import numpy as np
import pytest

from components.data import DataError, get_dataset, list_datasets, readers
from components.data.sources import ArchiveSource, SyntheticSource, contiguous_parts
from tests.conftest import (read_tar_gz_entries, write_idx_images, write_idx_labels, write_tar_gz,
                            write_tar_gz_entries)


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


def _inflating_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "gzip-inflate"]


def test_inflating_reader_gives_the_inflated_bytes_in_any_read_sizes():
    payload = np.random.default_rng(0).integers(0, 8, 100_000, dtype=np.uint8).tobytes()
    compressed = gzip.compress(payload)
    with readers.InflatingReader(io.BytesIO(compressed), chunk_bytes=4096, depth=2) as inflated:
        pieces = [inflated.read(size) for size in (1, 10, 5000, 4096, 7)]
        pieces.append(inflated.read())  # the rest
        assert inflated.read(10) == b"" and inflated.read() == b""  # and stays at the end
    assert b"".join(pieces) == payload
    assert [len(piece) for piece in pieces[:2]] == [1, 10]
    assert not _inflating_threads()


def test_inflating_reader_stops_its_thread_when_closed_early():
    compressed = gzip.compress(np.random.default_rng(1).bytes(2_000_000))
    with readers.InflatingReader(io.BytesIO(compressed), chunk_bytes=1024, depth=1) as inflated:
        assert len(inflated.read(100)) == 100
        assert _inflating_threads()  # blocked handing over the next chunk
    assert not _inflating_threads()


def test_inflating_reader_raises_what_gzip_raises_in_the_reading_thread():
    compressed = bytearray(gzip.compress(bytes(10_000)))
    compressed[-8] ^= 0xFF  # the CRC-32 in the trailer
    with readers.InflatingReader(io.BytesIO(bytes(compressed))) as inflated:
        with pytest.raises(gzip.BadGzipFile, match="CRC check failed"):
            inflated.read()
        with pytest.raises(gzip.BadGzipFile, match="CRC check failed"):  # again, rather than waiting
            inflated.read(1)
    payload = np.random.default_rng(2).bytes(1_000_000)  # hardly compresses: the cut falls in its last part
    with readers.InflatingReader(io.BytesIO(gzip.compress(payload)[:900_000])) as inflated:
        before_the_cut = inflated.read(800_000)  # inflated before the cut: handed over before the error
        with pytest.raises(EOFError):
            inflated.read()
    assert before_the_cut == payload[:800_000]
    with readers.InflatingReader(io.BytesIO(b"not gzip")) as inflated:
        with pytest.raises(gzip.BadGzipFile):
            inflated.read(1)


def test_a_cifar_archive_whose_gzip_checksum_is_wrong_is_corrupt(cifar10_dir):
    """The whole archive is inflated, to the gzip trailer, so damage that still inflates is caught."""
    directory, _ = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    payload = bytearray(archive.read_bytes())
    payload[-8] ^= 0xFF  # CRC-32 of the inflated tar
    archive.write_bytes(bytes(payload))
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: truncated or corrupt tar.gz archive "
                                        r"\(BadGzipFile: CRC check failed"):
        list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())
    assert not _inflating_threads()


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


def test_cifar_members_stream_into_blocks_before_the_archive_is_read(cifar10_dir):
    """Memory stays at one block: the first blocks come out while the rest of the archive is
    unread, so an archive cut short after its first member still yields them, then fails."""
    directory, data = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    whole = archive.read_bytes()
    archive.write_bytes(whole[:len(whole) // 3])  # random pixels hardly compress: members 1 and part of 2
    blocks = ArchiveSource(get_dataset("cifar10"), str(directory), block_size=16).read_blocks()
    first = next(blocks)
    assert first.keys()[:2] == ["train/000000", "train/000001"] and len(first) == 16
    np.testing.assert_array_equal(first.images, data["train"][0][:16])
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: truncated or corrupt tar.gz archive"):
        list(blocks)


def test_cifar_members_in_another_order_give_the_same_examples(cifar10_dir):
    """A member that comes before an earlier member of its split is held until its offset is known."""
    directory, _ = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    spec = get_dataset("cifar10")
    expected = examples_of(ArchiveSource(spec, str(directory), block_size=16).read_blocks())
    entries = read_tar_gz_entries(archive)
    write_tar_gz_entries(archive, entries[::-1])  # test_batch first, data_batch_5 before data_batch_1
    assert examples_of(ArchiveSource(spec, str(directory), block_size=16).read_blocks()) == expected
    for count in (2, 3):
        parts = ArchiveSource(spec, str(directory), block_size=16).parts(count)
        assert examples_of(block for part in parts for block in part.read_blocks()) == expected


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


BIN = "cifar-10-batches-bin"


def tar_entry(name, kind=tarfile.REGTYPE, linkname="", payload=b""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, payload


def rewrite_cifar10(archive, extra, at=None):
    """Rewrite the fixture's archive with ``extra`` (tar_entry results) inserted before member ``at``
    (a position from 0; None: at the end), keeping every original member and its bytes."""
    entries = read_tar_gz_entries(archive)
    at = len(entries) if at is None else at
    write_tar_gz_entries(archive, entries[:at] + list(extra) + entries[at:])


CIFAR10_MEMBERS = ", ".join(f"{BIN}/{name}" for name in [
    "batches.meta.txt", *(f"data_batch_{i}.bin" for i in range(1, 6)), "readme.html", "test_batch.bin"])

# Fixture members, in archive order: data_batch_1-5 (1-5), test_batch (6), batches.meta.txt (7).
SURPRISES = {
    "symlink": ([tar_entry(f"{BIN}/data_batch_6.bin", tarfile.SYMTYPE, "data_batch_1.bin")],
                "member 'cifar-10-batches-bin/data_batch_6.bin' is a symbolic link (to 'data_batch_1.bin'); "
                "only regular files and directories are allowed"),
    "symlink-named-as-an-extra": (
        [tar_entry(f"{BIN}/readme.html", tarfile.SYMTYPE, "/etc/passwd")],
        "member 'cifar-10-batches-bin/readme.html' is a symbolic link (to '/etc/passwd'); "
        "only regular files and directories are allowed"),
    "hardlink": ([tar_entry(f"{BIN}/readme.html", tarfile.LNKTYPE, f"{BIN}/test_batch.bin")],
                 "member 'cifar-10-batches-bin/readme.html' is a hard link (to 'cifar-10-batches-bin/test_batch.bin'); "
                 "only regular files and directories are allowed"),
    "fifo": ([tar_entry(f"{BIN}/readme.html", tarfile.FIFOTYPE)],
             "member 'cifar-10-batches-bin/readme.html' is a FIFO; only regular files and directories are allowed"),
    "char-device": ([tar_entry(f"{BIN}/readme.html", tarfile.CHRTYPE)],
                    "member 'cifar-10-batches-bin/readme.html' is a character device; "
                    "only regular files and directories are allowed"),
    "block-device": ([tar_entry(f"{BIN}/readme.html", tarfile.BLKTYPE)],
                     "member 'cifar-10-batches-bin/readme.html' is a block device; "
                     "only regular files and directories are allowed"),
    "duplicate": ([tar_entry(f"{BIN}/data_batch_1.bin", payload=bytes(3073))],
                  "member 'cifar-10-batches-bin/data_batch_1.bin' appears twice (members 1 and 8); "
                  "each name must appear once"),
    "unknown-inside": ([tar_entry(f"{BIN}/data_batch_6.bin", payload=bytes(3073))],
                       "member 'cifar-10-batches-bin/data_batch_6.bin' (3073 bytes) is not a file of this release; "
                       f"expected only {CIFAR10_MEMBERS}"),
    "unknown-outside": ([tar_entry("notes.txt", payload=b"hello")],
                        f"member 'notes.txt' (5 bytes) is not a file of this release; expected only {CIFAR10_MEMBERS}"),
    "absolute": ([tar_entry(f"/{BIN}/data_batch_1.bin", payload=bytes(3073))],
                 "member '/cifar-10-batches-bin/data_batch_1.bin' has an absolute name"),
    "dotdot": ([tar_entry(f"{BIN}/../../data_batch_1.bin", payload=bytes(3073))],
               "member 'cifar-10-batches-bin/../../data_batch_1.bin' has a '..' component"),
    "dotdot-directory": ([tar_entry("../outside", tarfile.DIRTYPE)], "member '../outside' has a '..' component"),
}


@pytest.mark.parametrize("problem", sorted(SURPRISES))
def test_surprising_tar_members_are_errors_naming_archive_and_member(cifar10_dir, problem):
    directory, _ = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    extra, message = SURPRISES[problem]
    rewrite_cifar10(archive, extra)  # after every record file: only a check of every member finds it
    with pytest.raises(DataError) as caught:
        list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())
    assert str(caught.value) == f"{archive}: {message}"


@pytest.mark.parametrize("problem, at", [("duplicate", None), ("symlink", None), ("unknown-inside", 2),
                                         ("dotdot", 0)])
def test_every_read_plan_fails_on_the_same_member(cifar10_dir, problem, at):
    """A part that stops early has still checked what it passed, and the last part reads to the end,
    so however the archive is cut, reading it fails, always on the same first bad member."""
    directory, _ = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    extra, message = SURPRISES[problem]
    rewrite_cifar10(archive, extra, at)
    source = ArchiveSource(get_dataset("cifar10"), str(directory), block_size=32)
    for count in (1, 2, 3, 6):
        errors = []
        for part in source.parts(count):
            try:
                list(part.read_blocks())
            except DataError as error:
                errors.append(str(error))
        assert errors and set(errors) == {f"{archive}: {message}"}, (count, errors)


def test_directories_and_the_releases_own_extra_files_are_read_past(cifar10_dir):
    directory, data = cifar10_dir
    archive = directory / "cifar-10-binary.tar.gz"
    # The real release starts with its directory and also holds readme.html.
    rewrite_cifar10(archive, [tar_entry(BIN, tarfile.DIRTYPE)], at=0)
    rewrite_cifar10(archive, [tar_entry(f"{BIN}/readme.html", payload=b"<html></html>"),
                              tar_entry(f"{BIN}/empty-dir", tarfile.DIRTYPE)], at=3)
    blocks = list(ArchiveSource(get_dataset("cifar10"), str(directory)).read_blocks())
    train = [b for b in blocks if b.split == "train"]
    np.testing.assert_array_equal(np.concatenate([b.images for b in train]), data["train"][0])
    names = [name for name, _, _ in readers.iter_tar_members(archive)]
    assert names[:4] == [f"{BIN}/data_batch_{i}.bin" for i in (1, 2)] + [f"{BIN}/readme.html", f"{BIN}/data_batch_3.bin"]
    assert len(names) == 8  # the six record files and two extras; directories are not yielded


def test_cifar100_archive_with_its_label_name_files(tmp_path):
    rng = np.random.default_rng(5)
    records = {split: np.concatenate([rng.integers(0, 20, (n, 1)), rng.integers(0, 100, (n, 1)),
                                      rng.integers(0, 256, (n, 3072))], axis=1).astype(np.uint8)
               for split, n in (("train", 30), ("test", 10))}
    write_tar_gz(tmp_path / "cifar-100-binary.tar.gz", {
        "cifar-100-binary/coarse_label_names.txt": b"aquatic_mammals\n",
        "cifar-100-binary/train.bin": records["train"].tobytes(),
        "cifar-100-binary/fine_label_names.txt": b"apple\n",
        "cifar-100-binary/test.bin": records["test"].tobytes()})
    blocks = list(ArchiveSource(get_dataset("cifar100"), str(tmp_path)).read_blocks())
    assert [b.labels.tolist() for b in blocks] == [records["train"][:, 1].tolist(), records["test"][:, 1].tolist()]
    write_tar_gz(tmp_path / "cifar-100-binary.tar.gz", {
        "cifar-100-binary/train.bin": records["train"].tobytes(), "cifar-100-binary/meta": b"",
        "cifar-100-binary/test.bin": records["test"].tobytes()})
    with pytest.raises(DataError, match=r"member 'cifar-100-binary/meta' \(0 bytes\) is not a file of this release; "
                                        r"expected only cifar-100-binary/coarse_label_names.txt, "
                                        r"cifar-100-binary/fine_label_names.txt, cifar-100-binary/test.bin, "
                                        r"cifar-100-binary/train.bin$"):
        list(ArchiveSource(get_dataset("cifar100"), str(tmp_path)).read_blocks())
