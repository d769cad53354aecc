"""Where examples come from: the publishers' archives on disk, tensorflow-datasets, or
deterministic synthetic images. Every source yields the same thing, :class:`Block`s of
uint8 images and int64 labels, so the Beam conversion does not care which it reads.

Sources are small picklable dataclasses: the Beam pipeline ships them to a worker,
which calls :meth:`read_blocks` there. ``parts(count)`` cuts a source into at most
``count`` sources that read disjoint parts of it (whole files or archive members), so
several workers can read at once and no example has to travel between them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
from typing import Iterator, Literal, Sequence, Union

import numpy as np

from components.data import readers, storage
from components.data.datasets import SPLITS, DatasetSpec
from components.data.errors import DataError

SourceKind = Literal["auto", "archive", "tfds", "synthetic"]


@dataclasses.dataclass
class Block:
    """A group of examples of one split, read from one file.

    Example ``i`` has the stable key ``f"{source_split}/{indices[i]:06d}"``: its position
    in the split of the source it came from. Keys survive the train/validation carve, so
    a validation example keeps the key it had in the publisher's train split.
    """

    split: str
    indices: np.ndarray  # uint64, (n,): position of each example in its source split
    images: np.ndarray  # uint8, (n, height, width, channels)
    labels: np.ndarray  # int64, (n,)
    origin: str  # the file (and member) these examples were read from, for error messages
    source_split: str = ""

    def __post_init__(self):
        self.source_split = self.source_split or self.split

    def __len__(self) -> int:
        return len(self.labels)

    def keys(self) -> list[str]:
        return [f"{self.source_split}/{i:06d}" for i in self.indices.tolist()]

    def key_array(self) -> np.ndarray:
        """:meth:`keys` as a NumPy bytes array, built column by column for six-digit indices."""
        if not len(self) or self.indices.max() >= 10**6:
            return np.array(self.keys(), dtype="S")
        powers = np.uint64(10) ** np.arange(5, -1, -1, dtype=np.uint64)
        digits = (self.indices[:, None] // powers % np.uint64(10)).astype(np.uint8) + ord("0")
        prefix = np.frombuffer(f"{self.source_split}/".encode(), np.uint8)
        matrix = np.concatenate([np.broadcast_to(prefix, (len(self), len(prefix))), digits], axis=1)
        return matrix.view(f"S{matrix.shape[1]}").ravel()

    def take(self, selection: np.ndarray, split: str | None = None) -> "Block":
        """The examples a boolean mask or an index array selects, optionally relabelled as another split."""
        return Block(split or self.split, self.indices[selection], self.images[selection], self.labels[selection],
                     self.origin, self.source_split)


def sha256_of(path: str) -> str:
    """The hex sha256 of the file at ``path`` (a local path or any URL Beam knows), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with storage.open_read(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_into_blocks(split: str, images: np.ndarray, labels: np.ndarray, origin: str,
                       block_size: int, first_offset: int = 0) -> Iterator[Block]:
    for start in range(0, len(labels), block_size):
        stop = min(start + block_size, len(labels))
        yield Block(split, np.arange(first_offset + start, first_offset + stop, dtype=np.uint64),
                    images[start:stop], labels[start:stop], origin)


def contiguous_parts(units: Sequence[str], count: int, skip_cost: float) -> list[tuple[str, ...]]:
    """Cut ``units`` (in reading order) into at most ``count`` contiguous groups, balanced.

    A group costs one per unit it reads plus ``skip_cost`` per unit before it that its
    reader has to pass over (a tar.gz member can only be reached by inflating all the
    members before it; separate files cost nothing to pass). Returns the cut whose
    dearest group is cheapest; ties go to the first such cut, so the plan is stable.
    """
    units = tuple(units)
    count = max(1, min(count, len(units)))

    def dearest(cuts: tuple[int, ...]) -> float:
        bounds = (0, *cuts, len(units))
        return max(skip_cost * start + (stop - start) for start, stop in zip(bounds, bounds[1:]))

    best = min(itertools.combinations(range(1, len(units)), count - 1), key=dearest)
    bounds = (0, *best, len(units))
    return [units[start:stop] for start, stop in zip(bounds, bounds[1:])]


# Files the publishers' CIFAR binary archives hold besides the record files (the label
# names, and CIFAR-10's readme): allowed, and skipped. Any other regular file is an error,
# so an archive that is not the release (or has been added to) is never half read.
CIFAR_ARCHIVE_EXTRAS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar-10-batches-bin/batches.meta.txt", "cifar-10-batches-bin/readme.html"),
    "cifar100": ("cifar-100-binary/coarse_label_names.txt", "cifar-100-binary/fine_label_names.txt"),
}

# Passing over a CIFAR member (inflating it) costs about half of converting it (measured
# on CIFAR-10: 0.17 s to inflate a member, about 0.14 s more to parse, check, encode and write it).
_TAR_SKIP_COST = 0.5


@dataclasses.dataclass
class ArchiveSource:
    """The publisher's own files in ``raw_dir``, read with our own readers.

    ``units`` limits the source to some of its files: splits for the IDX data sets,
    tar members for CIFAR (empty: all of them). :meth:`parts` makes such sources.
    """

    spec: DatasetSpec
    raw_dir: str
    block_size: int = 5000
    kind: str = "archive"
    units: tuple[str, ...] = ()

    def all_units(self) -> tuple[str, ...]:
        """Everything the source reads, in reading order: IDX splits or CIFAR tar members."""
        if self.spec.archive_format == "idx":
            return SPLITS
        return tuple(member for split in SPLITS for member in self.spec.split_files[split])

    def allowed_members(self) -> frozenset[str]:
        """Every regular file the CIFAR archive may hold: the record files and the known extras."""
        return frozenset(self.all_units()) | frozenset(CIFAR_ARCHIVE_EXTRAS.get(self.spec.name, ()))

    def parts(self, count: int) -> list["ArchiveSource"]:
        """At most ``count`` sources that together read this one, each a contiguous run of units."""
        skip_cost = _TAR_SKIP_COST if self.spec.archive_format == "cifar" else 0.0
        return [dataclasses.replace(self, units=units)
                for units in contiguous_parts(self.units or self.all_units(), count, skip_cost)]

    def raw_path(self, name: str) -> str:
        """Where the publisher's file ``name`` is: in ``raw_dir``, a local path or any URL Beam knows."""
        return storage.join(self.raw_dir, name)

    def missing_files(self) -> list[str]:
        return [self.raw_path(f.name) for f in self.spec.raw_files if not storage.is_file(self.raw_path(f.name))]

    def check_present(self) -> None:
        """Raise DataError naming the first of the publisher's files missing from ``raw_dir``."""
        missing = self.missing_files()
        if missing:
            raise DataError(f"{missing[0]}: file not found; the '{self.spec.name}' archive source needs "
                            f"{', '.join(f.name for f in self.spec.raw_files)} in {self.raw_dir}")

    def describe(self) -> dict:
        """Checksums of the raw files against the ones tensorflow-datasets registers.

        A file whose sha256 differs (a recompressed copy, say) is still accepted when
        its content validates while it is read; the manifest records which case applies.
        """
        self.check_present()
        files = []
        for raw in self.spec.raw_files:
            path = self.raw_path(raw.name)
            actual = sha256_of(path)
            files.append({
                "name": raw.name, "bytes": storage.size(path), "sha256": actual,
                "registered_sha256": raw.sha256,
                "verified": "registered-checksum" if actual == raw.sha256 else "content-validated",
            })
        return {"kind": self.kind, "raw_dir": str(self.raw_dir), "files": files}

    def read_blocks(self) -> Iterator[Block]:
        if self.spec.archive_format == "idx":
            yield from self._read_idx()
        else:
            yield from self._read_cifar()

    def _read_idx(self) -> Iterator[Block]:
        for split in self.units or SPLITS:
            images_name, labels_name = self.spec.split_files[split]
            images_path = self.raw_path(images_name)
            images, labels = readers.read_idx_split(images_path, self.raw_path(labels_name))
            yield from _split_into_blocks(split, images, labels, images_path, self.block_size)

    def _read_cifar(self) -> Iterator[Block]:
        """This part's members, ``block_size`` records at a time, as the archive streams past.

        Keys count from the start of the split in the spec's member order, so a member's
        first key needs the sizes of the members of its split before it (tar headers give
        them for free). In the release's order those come first and every member streams
        straight into blocks: memory stays at one block however large the archive. A member
        that comes before one of them (an archive packed in another order) is held whole
        until its offset is known.
        """
        archive = self.raw_path(self.spec.raw_files[0].name)
        split_of = {member: split for split in SPLITS for member in self.spec.split_files[split]}
        mine = self.units or self.all_units()
        needed = {earlier for member in mine for earlier in self._members_before(member)} | set(mine)
        # The last part checks the archive to its end; the others check every member they
        # pass (the reader does, before yielding it), so any bad member fails every plan.
        reads_to_end = mine[-1] == self.all_units()[-1]
        sizes: dict[str, int] = {}
        held: dict[str, bytes] = {}  # members read before their offset was known
        members = readers.iter_tar_members(archive, wanted=set(mine), allowed=self.allowed_members())
        with contextlib.closing(members):
            for name, size, handle in members:
                if name in split_of:
                    sizes[name] = size
                if handle is not None:
                    if self._first_index(name, sizes) is None:
                        held[name] = readers.read_member(handle, size, archive)
                    else:
                        yield from self._member_blocks(name, split_of[name], handle, size, sizes, archive)
                ready = [held_name for held_name in held if self._first_index(held_name, sizes) is not None]
                for name_held in sorted(ready, key=mine.index):  # index order within each split
                    payload = held.pop(name_held)
                    yield from self._member_blocks(name_held, split_of[name_held], io.BytesIO(payload), len(payload),
                                                   sizes, archive)
                if not reads_to_end and needed <= sizes.keys():
                    break  # nothing this part needs lies further in; stop inflating
        absent = sorted(set(needed) - set(sizes))
        if absent:
            raise DataError(f"{archive}: archive lacks member(s) {absent}; is it the {self.spec.name} binary release?")

    def _first_index(self, member: str, sizes: dict[str, int]) -> int | None:
        """The index in its split of ``member``'s first record, or None while a member before it is unread."""
        earlier = self._members_before(member)
        if not all(name in sizes for name in earlier):
            return None
        record_size = self.spec.cifar_label_bytes + readers.CIFAR_PIXELS
        return sum(sizes[name] // record_size for name in earlier)

    def _member_blocks(self, member: str, split: str, handle, size: int, sizes: dict[str, int],
                       archive: str) -> Iterator[Block]:
        origin = f"{archive}:{member}"
        offset = self._first_index(member, sizes)
        chunks = readers.iter_cifar_record_chunks(handle, size, self.spec.cifar_label_bytes, self.block_size,
                                                  archive, origin)
        for images, labels in chunks:
            yield Block(split, np.arange(offset, offset + len(labels), dtype=np.uint64), images,
                        labels[:, self.spec.cifar_label_index], origin)
            offset += len(labels)

    def _members_before(self, member: str) -> tuple[str, ...]:
        """The members of ``member``'s split that precede it in the spec's (fixed) order."""
        for members in self.spec.split_files.values():
            if member in members:
                return members[:members.index(member)]
        raise ValueError(f"{member} is not a member of {self.spec.name}")


@dataclasses.dataclass
class SyntheticSource:
    """Deterministic generated images with learnable class structure, in the data set's schema.

    Each class has a smooth random template; an example is its class template, shifted
    by up to two pixels, plus noise. A small CNN separates the classes within an epoch or
    two, which is what smoke runs and tests need.
    """

    spec: DatasetSpec
    train_examples: int = 1000
    test_examples: int = 200
    seed: int = 0
    block_size: int = 5000
    kind: str = "synthetic"

    def parts(self, count: int) -> list["SyntheticSource"]:
        return [self]  # generating is cheap; one part keeps the class templates in one place

    def describe(self) -> dict:
        return {"kind": self.kind, "seed": self.seed,
                "examples": {"train": self.train_examples, "test": self.test_examples}}

    def templates(self) -> np.ndarray:
        height, width, channels = self.spec.image_shape
        rng = np.random.default_rng(self.seed)
        coarse = rng.uniform(0, 255, (self.spec.num_classes, height // 4 + 1, width // 4 + 1, channels))
        # Upsample the coarse grid 4x so templates have spatial structure, not just noise.
        return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :height, :width, :]

    def read_blocks(self) -> Iterator[Block]:
        templates = self.templates()
        for split_number, (split, count) in enumerate((("train", self.train_examples), ("test", self.test_examples))):
            rng = np.random.default_rng([self.seed, split_number])
            labels = rng.integers(0, self.spec.num_classes, count).astype(np.int64)
            shifts = rng.integers(-2, 3, (count, 2))
            images = np.stack([np.roll(templates[label], tuple(shift), axis=(0, 1))
                               for label, shift in zip(labels, shifts)]) if count else \
                np.zeros((0, *self.spec.image_shape))
            images = np.clip(images + rng.normal(0, 24, images.shape), 0, 255).astype(np.uint8)
            yield from _split_into_blocks(split, images, labels, f"synthetic:{self.spec.name}:{split}", self.block_size)


@dataclasses.dataclass
class TfdsSource:
    """tensorflow-datasets' own build (downloads unless ``manual_dir`` holds the archives)."""

    spec: DatasetSpec
    data_dir: str
    manual_dir: str | None = None
    block_size: int = 5000
    kind: str = "tfds"

    def parts(self, count: int) -> list["TfdsSource"]:
        return [self]  # tfds builds and reads its own files in one place

    def describe(self) -> dict:
        return {"kind": self.kind, "tfds_name": self.spec.tfds_name, "data_dir": self.data_dir,
                "manual_dir": self.manual_dir}

    def builder(self):
        import tensorflow_datasets as tfds

        builder = tfds.builder(self.spec.tfds_name, data_dir=self.data_dir)
        config = tfds.download.DownloadConfig(manual_dir=self.manual_dir)
        builder.download_and_prepare(download_config=config)
        return builder

    def read_blocks(self) -> Iterator[Block]:
        import tensorflow_datasets as tfds

        builder = self.builder()
        for split in SPLITS:
            offset = 0
            dataset = builder.as_dataset(split=split, batch_size=self.block_size, shuffle_files=False)
            for batch in tfds.as_numpy(dataset):
                labels = batch["label"].astype(np.int64)
                yield from _split_into_blocks(split, batch["image"].astype(np.uint8), labels,
                                              f"tfds:{self.spec.tfds_name}:{split}", len(labels) or 1, offset)
                offset += len(labels)


Source = Union[ArchiveSource, SyntheticSource, TfdsSource]
