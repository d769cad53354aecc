"""Where examples come from: the publishers' archives on disk, tensorflow-datasets, or
deterministic synthetic images. Every source yields the same thing, :class:`Block`s of
uint8 images and int64 labels, so the Beam conversion does not care which it reads.

Sources are small picklable dataclasses: the Beam pipeline ships them to a worker,
which calls :meth:`read_blocks` there.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Iterator, Literal, Union

import numpy as np

from components.data import readers
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

    def take(self, mask: np.ndarray, split: str | None = None) -> "Block":
        """The examples where ``mask`` is true, optionally relabelled as another split."""
        return Block(split or self.split, self.indices[mask], self.images[mask], self.labels[mask],
                     self.origin, self.source_split)


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_into_blocks(split: str, images: np.ndarray, labels: np.ndarray, origin: str,
                       block_size: int, first_offset: int = 0) -> Iterator[Block]:
    for start in range(0, len(labels), block_size):
        stop = min(start + block_size, len(labels))
        yield Block(split, np.arange(first_offset + start, first_offset + stop, dtype=np.uint64),
                    images[start:stop], labels[start:stop], origin)


@dataclasses.dataclass
class ArchiveSource:
    """The publisher's own files in ``raw_dir``, read with our own readers."""

    spec: DatasetSpec
    raw_dir: str
    block_size: int = 5000
    kind: str = "archive"

    def missing_files(self) -> list[pathlib.Path]:
        return [pathlib.Path(self.raw_dir) / f.name for f in self.spec.raw_files
                if not (pathlib.Path(self.raw_dir) / f.name).is_file()]

    def describe(self) -> dict:
        """Checksums of the raw files against the ones tensorflow-datasets registers.

        A file whose sha256 differs (a recompressed copy, say) is still accepted when
        its content validates while it is read; the manifest records which case applies.
        """
        missing = self.missing_files()
        if missing:
            raise DataError(f"{missing[0]}: file not found; the '{self.spec.name}' archive source needs "
                            f"{', '.join(f.name for f in self.spec.raw_files)} in {self.raw_dir}")
        files = []
        for raw in self.spec.raw_files:
            path = pathlib.Path(self.raw_dir) / raw.name
            actual = sha256_of(path)
            files.append({
                "name": raw.name, "bytes": path.stat().st_size, "sha256": actual,
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
        for split in SPLITS:
            images_name, labels_name = self.spec.split_files[split]
            images_path = pathlib.Path(self.raw_dir) / images_name
            images, labels = readers.read_idx_split(images_path, pathlib.Path(self.raw_dir) / labels_name)
            yield from _split_into_blocks(split, images, labels, str(images_path), self.block_size)

    def _read_cifar(self) -> Iterator[Block]:
        archive = pathlib.Path(self.raw_dir) / self.spec.raw_files[0].name
        wanted = {member: split for split in SPLITS for member in self.spec.split_files[split]}
        payloads = {name: data for name, data in readers.iter_tar_members(archive) if name in wanted}
        absent = sorted(set(wanted) - set(payloads))
        if absent:
            raise DataError(f"{archive}: archive lacks member(s) {absent}; is it the {self.spec.name} binary release?")
        for split in SPLITS:
            offset = 0
            for member in self.spec.split_files[split]:  # fixed member order gives stable keys
                origin = f"{archive}:{member}"
                images, labels = readers.parse_cifar_records(payloads.pop(member), self.spec.cifar_label_bytes, origin)
                labels = labels[:, self.spec.cifar_label_index]
                yield from _split_into_blocks(split, images, labels, origin, self.block_size, offset)
                offset += len(labels)


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
