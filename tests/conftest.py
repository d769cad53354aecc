"""Shared fixtures: tiny data sets written in the publishers' exact formats."""
from __future__ import annotations

import gzip
import io
import os
import pathlib
import struct
import tarfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_idx_images(path: pathlib.Path, images: np.ndarray, magic: int = 0x00000803) -> None:
    count, rows, cols = images.shape[:3]
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">IIII", magic, count, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: pathlib.Path, labels: np.ndarray, magic: int = 0x00000801) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes())


def make_images(count: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8), rng.integers(0, 10, count)


def write_mnist_dir(directory: pathlib.Path, train: int = 300, test: int = 100, seed: int = 0) -> dict:
    """The four gzip IDX files of the MNIST family, with random content; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        images, labels = make_images(count, (28, 28), seed + (split == "test"))
        write_idx_images(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_labels(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
        data[split] = (images[..., None], labels)
    return data


def cifar10_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte then the R, G and B planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def write_tar_gz(path: pathlib.Path, members: dict[str, bytes]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def write_tar_gz_entries(path: pathlib.Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    """A tar.gz of the given headers in this order, each followed by its payload (links,
    devices, FIFOs and directories included, and names repeated if given twice)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for info, payload in entries:
            if info.isfile():
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)


def read_tar_gz_entries(path: pathlib.Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every header of a tar.gz in archive order, with the payload of each regular file (else b"")."""
    with tarfile.open(path, "r:gz") as tar:
        return [(info, tar.extractfile(info).read() if info.isfile() else b"") for info in tar.getmembers()]


def write_cifar10_dir(directory: pathlib.Path, per_batch: int = 40, test: int = 50, seed: int = 0) -> dict:
    """A small ``cifar-10-binary.tar.gz`` in the exact published layout; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    members, train_parts = {}, []
    for batch in range(1, 6):
        images, labels = make_images(per_batch, (32, 32, 3), seed + batch)
        members[f"cifar-10-batches-bin/data_batch_{batch}.bin"] = cifar10_records(images, labels)
        train_parts.append((images, labels))
    test_images, test_labels = make_images(test, (32, 32, 3), seed + 99)
    members["cifar-10-batches-bin/test_batch.bin"] = cifar10_records(test_images, test_labels)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    write_tar_gz(directory / "cifar-10-binary.tar.gz", members)
    return {"train": (np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts])),
            "test": (test_images, test_labels)}


@pytest.fixture
def mnist_dir(tmp_path):
    directory = tmp_path / "raw" / "mnist"
    return directory, write_mnist_dir(directory)


@pytest.fixture
def cifar10_dir(tmp_path):
    directory = tmp_path / "raw" / "cifar10"
    return directory, write_cifar10_dir(directory)


def require_shared(*parts: str) -> pathlib.Path:
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path}: the real data in ../shared/datasets is missing (see README, 'Data')")
    return path


def prepare_synthetic(out_dir: pathlib.Path, train: int, test: int, shards: dict[str, int],
                      dataset: str = "cifar10") -> pathlib.Path:
    """A small synthetic data set written by the real prepare stage (in-process, ~1-2 s)."""
    from components.data.prepare import PrepareConfig, SyntheticConfig, prepare_dataset

    config = PrepareConfig(source="synthetic", direct_running_mode="in_memory", direct_num_workers=1,
                           num_shards=shards, synthetic=SyntheticConfig(train_examples=train, test_examples=test))
    prepare_dataset(dataset, config, raw_dir=str(out_dir.parent / "raw"), out_dir=str(out_dir), log=lambda *_: None)
    return out_dir


# Python source to put first in a subprocess's code: from then on any import of TensorFlow
# raises ImportError (tests of the TF-free JAX path). A finder rather than
# sys.modules["tensorflow"] = None, which puts the name in sys.modules, and Keras takes a
# name there as TensorFlow being loaded (keras/src/utils/backend_utils.py: in_tf_graph).
NO_TENSORFLOW = """import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ImportError(f"this process must not import TensorFlow (asked for {name})")
sys.meta_path.insert(0, NoTensorFlow())
"""
