"""The data sets the pipeline knows, each described once.

A :class:`DatasetSpec` holds what every stage needs: image shape, classes and label
names, the publisher's file names per split and the sha256 that tensorflow-datasets
registers for each (``tensorflow_datasets/url_checksums/<name>.txt``), so an archive on
disk can be checked against the canonical release.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

from components.data.errors import DataError

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class RawFile:
    """One file as its publisher ships it."""

    name: str
    sha256: str  # as registered by tensorflow-datasets
    size: int  # bytes, as registered by tensorflow-datasets


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything fixed about a data set.

    ``archive_format`` says which reader applies: ``idx`` (one gzip images file and one
    labels file per split, in ``split_files[split]`` as (images, labels)) or ``cifar``
    (one tar.gz holding binary record files; ``split_files[split]`` lists the members).
    """

    name: str
    tfds_name: str
    image_shape: tuple[int, int, int]  # (height, width, channels)
    label_names: tuple[str, ...]
    archive_format: Literal["idx", "cifar"]
    raw_files: tuple[RawFile, ...]
    split_files: dict[str, tuple[str, ...]]
    cifar_label_bytes: int = 0  # bytes of label before the pixels in each CIFAR record
    cifar_label_index: int = 0  # which of those bytes is the class label
    homepage: str = ""
    download_url: str = ""  # where tensorflow-datasets fetches the files from (their base URL)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def raw_file(self, name: str) -> RawFile:
        return next(f for f in self.raw_files if f.name == name)


_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                  "dog", "frog", "horse", "ship", "truck")
# The fine labels in the order of the archive's fine_label_names.txt.
_CIFAR100_NAMES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split())

_IDX_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", tfds_name="mnist", image_shape=(28, 28, 1),
        label_names=tuple(str(d) for d in range(10)), archive_format="idx",
        raw_files=(
            RawFile("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            RawFile("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            RawFile("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            RawFile("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        ),
        split_files=_IDX_SPLIT_FILES, homepage="http://yann.lecun.com/exdb/mnist/",
        download_url="https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist", tfds_name="fashion_mnist", image_shape=(28, 28, 1),
        label_names=_FASHION_NAMES, archive_format="idx",
        raw_files=(
            RawFile("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            RawFile("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            RawFile("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            RawFile("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        ),
        split_files=_IDX_SPLIT_FILES, homepage="https://github.com/zalandoresearch/fashion-mnist",
        download_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "cifar10": DatasetSpec(
        name="cifar10", tfds_name="cifar10", image_shape=(32, 32, 3),
        label_names=_CIFAR10_NAMES, archive_format="cifar",
        raw_files=(RawFile("cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171),),
        split_files={
            "train": tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)),
            "test": ("cifar-10-batches-bin/test_batch.bin",),
        },
        cifar_label_bytes=1, cifar_label_index=0, homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        download_url="https://www.cs.toronto.edu/~kriz/"),
    "cifar100": DatasetSpec(
        name="cifar100", tfds_name="cifar100", image_shape=(32, 32, 3),
        label_names=_CIFAR100_NAMES, archive_format="cifar",
        raw_files=(RawFile("cifar-100-binary.tar.gz", "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec", 168513733),),
        split_files={"train": ("cifar-100-binary/train.bin",), "test": ("cifar-100-binary/test.bin",)},
        # Records are (coarse label, fine label, pixels); the class label is the fine one.
        cifar_label_bytes=2, cifar_label_index=1, homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        download_url="https://www.cs.toronto.edu/~kriz/"),
}


def list_datasets() -> list[str]:
    """Names of the known data sets, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The spec of data set ``name``; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(f"unknown data set '{name}'; known data sets: {', '.join(list_datasets())}.{hint}") from None
