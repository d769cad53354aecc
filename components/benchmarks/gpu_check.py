"""The GPU check: how fast and how well the zoo trains with Keras on JAX, in one timed run.

``python -m pipeline.gpu_check run`` calls :func:`run_check`, which writes one JSON file
(``gpu_check.json``) section by section, atomically, so a run cut off by its time limit
still leaves every section it finished:

* ``environment``: device, backend, versions;
* ``data``: the CIFAR-10 JPEG copy decoded exactly as ``build_cifar10_binary.py`` does
  (Pillow, RGB, canonical shuffle), and the sha256 of the decoded records checked
  against the bundle's manifest, so the pixels trained on are provably the ones of our
  canonical archive (``data/raw/cifar10/cifar-10-binary.tar.gz``);
* ``resnet20``: steady-state training images/s (compile excluded) under ``mixed_bfloat16``,
  ``mixed_float16`` and ``float32`` (JAX always compiles the step with XLA);
* ``input``: the device-resident input (:class:`components.inputs.device.DeviceBatches`)
  alone, against the training rate;
* ``time_to_accuracy``: ResNet-18, one-cycle SGD, a fixed training-time budget, test accuracy;
* ``zoo``: every registered model trained on a fixed number of images, its images/s and
  test accuracy, as far as the global deadline allows (the rest: ``not run (deadline)``).

:func:`render_markdown` turns a GPU run's JSON into the README's table and refuses quick
or CPU results. Nothing here imports TensorFlow; Keras and JAX are imported inside the
functions that measure, after ``pipeline.gpu_check`` has made them importable and chosen
the JAX backend. The module's top level needs only the standard library and NumPy.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import pathlib
import platform
import statistics
import tarfile
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"  # the recipes (tracked, so it travels with the working tree)

SCHEMA = 1
RESULT_FILE = "gpu_check.json"
MANIFEST_FILE = "manifest.json"

# The GPU machine's limits (/work/.library/device/README.md): 8 minutes a command; the
# global deadline leaves 30 s of them for the last section's clean-up and the final write.
COMMAND_LIMIT_S = 480
DEFAULT_DEADLINE_S = 450.0

# Goals, from the brief for the borrowed H200.
GOAL_RESNET20_IMAGES_PER_S = 20_000  # mixed precision, batch 512, one H200
GOAL_INPUT_OVER_TRAIN = 3.0  # the input must deliver >= 3x what training consumes
GOAL_TEST_ACCURACY = 0.93  # CIFAR-10 test split (JPEG copy), within 60 s of training

PRECISIONS = ("mixed_bfloat16", "mixed_float16", "float32")

# build_cifar10_binary.py (../shared/datasets): class order, record layout and shuffle.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SHAPE = (32, 32, 3)
CIFAR10_RECORD_BYTES = 1 + 32 * 32 * 3  # label byte, then the R, G and B planes
CIFAR10_SHUFFLE_SEED = 20091111  # the canonical archive's fixed permutation, train first, then test
CIFAR10_TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{k}.bin" for k in range(1, 6))
CIFAR10_TEST_MEMBER = "cifar-10-batches-bin/test_batch.bin"

FASHION_MNIST_FILES = {  # split -> (images, labels), as the publisher names them
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class GpuCheckError(RuntimeError):
    """A bundle, manifest or data set the check cannot use; the message names the file and the problem."""


class DigestMismatch(GpuCheckError):
    """Decoded pixels or labels that differ from the ones the manifest recorded."""


# =========================================================================== hashing
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes | np.ndarray) -> str:
    """Hex sha256 of bytes or of an array's C-order bytes."""
    return hashlib.sha256(data.tobytes() if isinstance(data, np.ndarray) else data).hexdigest()


# =========================================================================== data
@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory: uint8 images ``[N, H, W, C]`` and int64 class ids ``[N]``."""

    images: np.ndarray
    labels: np.ndarray

    def head(self, count: int | None) -> "Split":
        """The first ``count`` examples (all when None). The canonical order is already shuffled,
        so a head is a random sample."""
        return self if count is None else Split(self.images[:count], self.labels[:count])

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A decoded data set: train and test splits plus what the model's first layer needs."""

    name: str
    train: Split
    test: Split
    num_classes: int

    def info(self) -> dict:
        """``prepare_info.json``'s fields that :func:`components.inputs.normalization_layer` reads:
        the image shape and the train split's per-channel mean and std, in 0-255 units."""
        pixels = self.train.images.reshape(-1, self.train.images.shape[-1]).astype(np.float64)
        return {"image_shape": list(self.train.images.shape[1:]), "num_classes": self.num_classes,
                "train_statistics": {"mean": pixels.mean(axis=0).tolist(), "std": pixels.std(axis=0).tolist()}}

    def head(self, train: int | None, test: int | None) -> "Dataset":
        """The same data set cut to its first ``train`` and ``test`` examples (quick runs)."""
        return dataclasses.replace(self, train=self.train.head(train), test=self.test.head(test))


def records_to_split(records: np.ndarray) -> Split:
    """CIFAR records ``[N, 3073]`` (label byte, channel-major pixels) -> images ``[N, 32, 32, 3]`` and labels."""
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), records[:, 0].astype(np.int64))


def _decode_jpegs(payloads: Sequence[bytes]) -> bytes:
    """Channel-major RGB pixels of 32x32 JPEGs, concatenated: ``build_cifar10_binary.py``'s decode.

    Runs in worker processes (module level so it pickles). Pillow, ``convert("RGB")``,
    uint8, then ``transpose(2, 0, 1)``, byte for byte as the script does.
    """
    from PIL import Image

    out = bytearray()
    for index, payload in enumerate(payloads):
        image = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"), np.uint8)
        if image.shape != CIFAR10_SHAPE:
            raise ValueError(f"image {index} of its chunk has shape {image.shape}, expected {CIFAR10_SHAPE}")
        out += image.transpose(2, 0, 1).tobytes()
    return bytes(out)


def read_cifar10_jpeg_members(archive: pathlib.Path) -> dict[str, list[tuple[str, int, bytes]]]:
    """``{"train": [(name, label, jpeg bytes), ...], "test": [...]}``, members sorted by name as the script sorts.

    Member names are ``cifar10-jpeg/<split>/<class>/<file>.jpg``; anything else is an error
    naming the archive and the member.
    """
    splits: dict[str, list[tuple[str, int, bytes]]] = {"train": [], "test": []}
    try:
        # Decompressed in memory at once (93 MB; 2.5x faster than tarfile's small gzip reads), read in
        # one pass in archive order, sorted afterwards.
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive.read_bytes()))) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if len(parts) != 4 or parts[1] not in splits or parts[2] not in CIFAR10_CLASSES:
                    raise GpuCheckError(f"{archive}: member {member.name!r} is not "
                                        f"cifar10-jpeg/{{train,test}}/<class>/<file>.jpg")
                payload = tar.extractfile(member).read()
                splits[parts[1]].append((member.name, CIFAR10_CLASSES.index(parts[2]), payload))
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as error:
        raise GpuCheckError(f"{archive}: not a readable .tar.gz ({error})") from None
    for entries in splits.values():
        entries.sort(key=lambda entry: entry[0])
    return splits


def decode_cifar10_jpeg(archive: str | os.PathLike, workers: int | None = None) -> dict[str, np.ndarray]:
    """The CIFAR-10 JPEG copy decoded to records ``[N, 3073]`` in the canonical archive's order.

    Exactly what ``build_cifar10_binary.py`` writes: members sorted by name, decoded with
    Pillow to RGB, one label byte then the channel-major pixels, then each split permuted
    by ``default_rng(20091111)`` (train's permutation drawn first, then test's). JPEGs are
    decoded in ``workers`` processes (default: one per core, at most 16), 32x32 images being
    too small for threads to beat Python's lock.
    """
    archive = pathlib.Path(archive)
    members = read_cifar10_jpeg_members(archive)
    workers = workers or min(os.cpu_count() or 1, 16)
    rng = np.random.default_rng(CIFAR10_SHUFFLE_SEED)
    records = {}
    for split in ("train", "test"):
        entries = members[split]
        if not entries:
            raise GpuCheckError(f"{archive}: no {split} images")
        pixels = _decode_all([payload for _, _, payload in entries], workers, archive)
        table = np.empty((len(entries), CIFAR10_RECORD_BYTES), np.uint8)
        table[:, 0] = [label for _, label, _ in entries]
        table[:, 1:] = np.frombuffer(pixels, np.uint8).reshape(len(entries), -1)
        records[split] = table[rng.permutation(len(entries))]
    return records


def _decode_all(payloads: list[bytes], workers: int, archive: pathlib.Path) -> bytes:
    """Every JPEG decoded, in order; in ``workers`` spawned processes when that pays (> 2,000 images)."""
    try:
        if workers <= 1 or len(payloads) < 2000:
            return _decode_jpegs(payloads)
        size = math.ceil(len(payloads) / (workers * 4))  # 4 chunks a worker evens out the load
        chunks = [payloads[i:i + size] for i in range(0, len(payloads), size)]
        context = multiprocessing.get_context(_start_method())
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            return b"".join(pool.map(_decode_jpegs, chunks))
    except ValueError as error:
        raise GpuCheckError(f"{archive}: {error}") from None


def _start_method() -> str:
    """``fork`` while this process runs one thread and has not loaded JAX (cheap, and needs no
    ``__main__`` guard in the caller's script), else ``spawn``: fork copies other threads' locks
    held, which can hang the child."""
    import sys

    return "fork" if threading.active_count() == 1 and "jax" not in sys.modules else "spawn"


def cifar10_digests(records: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per split: the example count and the sha256 of its records as the canonical archive stores them
    (train: data_batch_1..5 concatenated; test: test_batch)."""
    return {split: {"examples": int(len(table)), "records_sha256": sha256_bytes(table)}
            for split, table in records.items()}


def canonical_archive_digests(archive: str | os.PathLike) -> dict[str, dict]:
    """:func:`cifar10_digests` read straight from ``cifar-10-binary.tar.gz`` (no decoding)."""
    archive = pathlib.Path(archive)
    wanted = {name: "train" for name in CIFAR10_TRAIN_MEMBERS} | {CIFAR10_TEST_MEMBER: "test"}
    payloads: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name in wanted:
                    payloads[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise GpuCheckError(f"{archive}: not a readable .tar.gz ({error})") from None
    missing = sorted(set(wanted) - set(payloads))
    if missing:
        raise GpuCheckError(f"{archive}: missing {missing}")
    result = {}
    for split, names in (("train", CIFAR10_TRAIN_MEMBERS), ("test", (CIFAR10_TEST_MEMBER,))):
        data = b"".join(payloads[name] for name in names)
        if len(data) % CIFAR10_RECORD_BYTES:
            raise GpuCheckError(f"{archive}: {split} holds {len(data)} bytes, not a whole number of "
                                f"{CIFAR10_RECORD_BYTES}-byte records")
        result[split] = {"examples": len(data) // CIFAR10_RECORD_BYTES, "records_sha256": sha256_bytes(data)}
    return result


def read_idx(path: pathlib.Path) -> tuple[bytes, np.ndarray]:
    """A gzip IDX file: its decompressed bytes (what the manifest hashes) and the array it holds."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise GpuCheckError(f"{path}: not a readable gzip file ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise GpuCheckError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != math.prod(shape):
        raise GpuCheckError(f"{path}: header says {shape}, body holds {body.size} bytes")
    return data, body.reshape(shape)


def fashion_mnist_digests(directory: pathlib.Path) -> dict[str, dict]:
    """Per split: count and the sha256 of the decompressed IDX images and labels (the publisher's bytes)."""
    result = {}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images_bytes, images = read_idx(directory / images_file)
        labels_bytes, _ = read_idx(directory / labels_file)
        result[split] = {"examples": int(images.shape[0]), "images_sha256": sha256_bytes(images_bytes),
                         "labels_sha256": sha256_bytes(labels_bytes)}
    return result


def read_fashion_mnist(directory: pathlib.Path) -> tuple[Dataset, dict[str, dict]]:
    """Fashion-MNIST from its four IDX files (images ``[N, 28, 28, 1]``) and their digests."""
    splits, digests = {}, {}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images_bytes, images = read_idx(directory / images_file)
        labels_bytes, labels = read_idx(directory / labels_file)
        if len(images) != len(labels):
            raise GpuCheckError(f"{directory}: {split} has {len(images)} images but {len(labels)} labels")
        splits[split] = Split(np.ascontiguousarray(images[..., None]), labels.astype(np.int64))
        digests[split] = {"examples": int(len(images)), "images_sha256": sha256_bytes(images_bytes),
                          "labels_sha256": sha256_bytes(labels_bytes)}
    return Dataset("fashion_mnist", splits["train"], splits["test"], 10), digests


# =========================================================================== manifest checks
def load_manifest(bundle: str | os.PathLike) -> dict:
    """``<bundle>/manifest.json`` as a dict; GpuCheckError naming the file when it is missing or bad."""
    path = pathlib.Path(bundle) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise GpuCheckError(f"{path}: no manifest (run `python -m pipeline.gpu_check build` first, "
                            f"and carry {pathlib.Path(bundle)})") from None
    except json.JSONDecodeError as error:
        raise GpuCheckError(f"{path}: not valid JSON ({error})") from None
    if manifest.get("schema") != SCHEMA or not isinstance(manifest.get("files"), dict):
        raise GpuCheckError(f"{path}: schema {manifest.get('schema')!r}, expected {SCHEMA} with a 'files' table "
                            "(rebuild the bundle with this checkout)")
    return manifest


def verify_files(bundle: str | os.PathLike, manifest: dict) -> None:
    """Every file the manifest lists is in the bundle with its recorded size and sha256."""
    bundle = pathlib.Path(bundle)
    for relative, entry in manifest["files"].items():
        path = bundle / relative
        if not path.is_file():
            raise GpuCheckError(f"{path}: listed in {bundle / MANIFEST_FILE} but missing (carry {bundle} whole)")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise GpuCheckError(f"{path}: {size} bytes, the manifest says {entry['bytes']} (copied incompletely?)")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise GpuCheckError(f"{path}: sha256 {digest}, the manifest says {entry['sha256']} "
                                "(changed after the bundle was built)")


def check_digests(dataset: str, got: dict[str, dict], expected: dict[str, dict], where: str) -> None:
    """Raise DigestMismatch unless each split's count and digests equal the manifest's (``where`` names the source)."""
    for split, want in expected.items():
        have = got.get(split)
        if have is None:
            raise DigestMismatch(f"{where}: no {split} split decoded, the manifest has one")
        for key, value in want.items():
            if have.get(key) != value:
                raise DigestMismatch(
                    f"{where}: decoded {dataset} {split} {key} is {have.get(key)!r}, the manifest says {value!r}: "
                    "these are not the pixels and labels of our canonical archive (another JPEG decoder or "
                    "Pillow version, or a changed archive); no figure from them would compare with ours")


def load_cifar10(bundle: pathlib.Path, manifest: dict, workers: int | None = None) -> tuple[Dataset, dict]:
    """Decode the bundle's CIFAR-10 JPEGs, check them against the manifest, return the data set and a report."""
    entry = manifest.get("datasets", {}).get("cifar10")
    if not entry:
        raise GpuCheckError(f"{bundle / MANIFEST_FILE}: no datasets.cifar10 entry")
    archive = bundle / entry["archive"]
    started = time.perf_counter()
    records = decode_cifar10_jpeg(archive, workers)
    decode_s = time.perf_counter() - started
    got = cifar10_digests(records)
    check_digests("cifar10", got, entry["decoded"], str(archive))
    dataset = Dataset("cifar10", records_to_split(records["train"]), records_to_split(records["test"]), 10)
    return dataset, {"archive": entry["archive"], "decode_s": round(decode_s, 2), "verified": True,
                     "digest_source": entry.get("digest_source"), **got}


def load_fashion_mnist(bundle: pathlib.Path, manifest: dict) -> tuple[Dataset, dict] | None:
    """The bundle's Fashion-MNIST checked against the manifest, or None when it was not carried."""
    entry = manifest.get("datasets", {}).get("fashion_mnist")
    if not entry:
        return None
    directory = bundle / entry["directory"]
    dataset, got = read_fashion_mnist(directory)
    check_digests("fashion_mnist", got, entry["decoded"], str(directory))
    return dataset, {"directory": entry["directory"], "verified": True, **got}


# =========================================================================== deadline
class Deadline:
    """A global time budget (seconds, monotonic clock) checked between sections and models."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic):
        self.budget_s = float(budget_s)
        self.clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def allows(self, estimate_s: float | None) -> bool:
        """Whether work predicted to take ``estimate_s`` seconds ends before the deadline (None: unknown,
        allowed while any time is left)."""
        return self.remaining() > (estimate_s or 0.0) and self.remaining() > 0


@dataclasses.dataclass
class CostModel:
    """Predicts a training run's seconds (compile + steps + scoring) from what earlier runs took.

    Compile time grows with the number of weight layers (XLA compiles the whole step):
    the median seconds per layer seen so far, times 1.5 for the forward pass compiled
    again for scoring. A step costs its multiply-adds at the best MAC rate seen plus
    ``step_overhead_s`` (Keras' loop and the launches). Scoring costs a third of a
    training pass over the test images. ``safety`` pads the prediction, since a deep
    model may compile slower per layer than the ones seen so far.
    """

    safety: float = 1.3
    step_overhead_s: float = 0.003
    compile_s_per_layer: list[float] = dataclasses.field(default_factory=list)
    s_per_mac_image: list[float] = dataclasses.field(default_factory=list)

    def observe(self, *, layers: int, compile_s: float, macs: int, batch_size: int, step_s: float) -> None:
        """Record one run: its weight layers, compile seconds, MACs per image, batch and median step seconds."""
        if layers > 0 and compile_s > 0:
            self.compile_s_per_layer.append(compile_s / layers)
        if step_s > 0 and macs > 0:
            self.s_per_mac_image.append(max(step_s - self.step_overhead_s, 0.0) / (macs * batch_size))

    def predict(self, *, layers: int, macs: int, batch_size: int, steps: int, eval_images: int = 0) -> float | None:
        """Predicted seconds, or None before anything was observed."""
        if not self.compile_s_per_layer or not self.s_per_mac_image:
            return None
        compile_s = statistics.median(self.compile_s_per_layer) * layers * 1.5
        step_s = self.step_overhead_s + min(self.s_per_mac_image) * macs * batch_size
        scoring_s = step_s * eval_images / batch_size / 3
        return self.safety * (compile_s + steps * step_s + scoring_s)


# =========================================================================== results
class Results:
    """The JSON result file, rewritten atomically (temp file + rename) after every change."""

    def __init__(self, path: str | os.PathLike, header: dict):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"schema": SCHEMA, **header}
        self.write()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
        os.replace(temporary, self.path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def not_run(reason: str = "deadline") -> dict:
    return {"status": f"not run ({reason})"}


def error_entry(error: BaseException) -> dict:
    """A section or model that raised: the error in one line and the end of the traceback."""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return {"status": "error", "error": f"{type(error).__name__}: {error}"[:2000],
            "traceback": "".join(lines)[-3000:]}


# =========================================================================== options
@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Budgets of one run (defaults: the GPU machine). :meth:`quick_defaults` is the CPU smoke form
    (its figures mean nothing and are marked so)."""

    quick: bool = False
    deadline_s: float = DEFAULT_DEADLINE_S
    batch_size: int = 512
    eval_batch_size: int = 1000  # divides CIFAR-10's 10,000 test images: one forward compile
    train_subset: int | None = None  # first N training images (None: all 50,000)
    test_subset: int | None = None
    sections: tuple[str, ...] = ("resnet20", "input", "time_to_accuracy", "zoo")
    precisions: tuple[str, ...] = PRECISIONS
    warmup_steps: int = 5  # steps run before the timed ones (the first compiles)
    timed_steps: int = 60  # 30,720 images at batch 512: about 1.5 s at the 20,000 img/s goal
    input_batches: int = 200
    tta_model: str = "resnet18"
    tta_budget_s: float = 60.0  # training wall-clock, compile excluded
    tta_probe_steps: int = 20  # steps timed at the start to plan the schedule's length
    zoo_models: tuple[str, ...] | None = None  # None: every registered model
    zoo_epochs: float = 1.0  # the fixed budget: this many passes over the training images per model
    zoo_dataset: str = "cifar10"
    decode_workers: int | None = None

    @classmethod
    def quick_defaults(cls, **overrides) -> "RunOptions":
        """Tiny budgets for the CPU here (~2-3 minutes on 2 idle cores): a 2,048-image subset, batch 64,
        a few timed steps of ResNet-20, the small Baseline CNN for 30 s (a net that learns something in
        30 s of CPU, so the time-to-accuracy path shows more than chance) and three small models of the zoo."""
        base = dict(quick=True, deadline_s=360.0, batch_size=64, eval_batch_size=256, train_subset=2048,
                    test_subset=1024, warmup_steps=2, timed_steps=3, input_batches=20, tta_model="baseline",
                    tta_budget_s=30.0, tta_probe_steps=4, zoo_models=("lenet5", "mlp", "alexnet"))
        return cls(**{**base, **overrides})


# =========================================================================== Keras pieces
def standard_ops(channels: int) -> tuple[str, ...]:
    """The ``standard`` augmentation's ops (pad-4 crop + flip for RGB, small shifts for grey)."""
    from components.inputs.policies import expand_policies

    return expand_policies(["standard"], channels)


def load_recipe(name: str, overrides: dict, params_path: str | os.PathLike = PARAMS):
    """Recipe ``name`` of params.yaml with ``overrides`` (same merge as an experiment's), as a RecipeConfig."""
    from components.config import from_dict, load_params
    from components.training.config import RecipeConfig, _deep_merge

    recipes = load_params(str(params_path)).get("recipes") or {}
    if name not in recipes:
        raise GpuCheckError(f"{params_path}: no recipe {name!r} (recipes: {', '.join(sorted(recipes))})")
    return from_dict(RecipeConfig, _deep_merge(recipes[name], overrides), where=f"{params_path}:recipes.{name}")


def tta_recipe(options: RunOptions, params_path=PARAMS):
    """The time-to-accuracy recipe: ours, ``fast_onecycle``, moved to batch 512.

    * one-cycle SGD with Nesterov momentum and label smoothing 0.1 (fast_onecycle): the
      schedule that reaches high accuracy in few epochs, with its 25% ramp as warm-up;
    * peak rate 0.2 * sqrt(batch / 128): fast_onecycle's 0.2 at batch 128 under square-root
      scaling, 0.4 at batch 512 (linear scaling's 0.8 is unstable without a longer warm-up),
      0.14 at the quick run's 64;
    * L2 5e-4, as our ResNet-18 zoo recipe (cifar10-resnet18-cosine): a short run of a
      wide net (11M weights) wants more regularisation than fast_onecycle's 1e-4;
    * the schedule's length is planned from the measured step rate so that it ends
      inside the budget (:class:`StretchedSchedule`); no choice is made on held-out data,
      so all 50,000 training images are trained on and the test split is scored once, at
      the end (plain and with a horizontal-flip average, planned in advance).
    """
    base = load_recipe("fast_onecycle", {}, params_path)
    rate = base.optimizer.learning_rate * math.sqrt(options.batch_size / base.batch_size)
    return load_recipe("fast_onecycle", {"batch_size": options.batch_size, "optimizer": {"learning_rate": rate},
                                         "weight_decay": 5e-4}, params_path)


def zoo_recipe(options: RunOptions, params_path=PARAMS):
    """The zoo's one recipe: ``tutorial_adam_5ep``'s Adam 1e-3 (constant), batch 512, standard augmentation.

    Adam at 1e-3 trains every architecture of the zoo without tuning (LeNet-5's sigmoids,
    VGG and AlexNet without batch norm, where one-cycle SGD at 0.4 would diverge), so one
    recipe makes the models comparable; 1 epoch of 50,000 images is the fixed budget.
    """
    return load_recipe("tutorial_adam_5ep", {"batch_size": options.batch_size, "epochs": 1,
                                             "augment": ["standard"]}, params_path)


def assemble_model(name: str, info: dict, policy: str, hparams: dict | None = None):
    """Normalisation (train statistics) in front of zoo model ``name``, built under dtype ``policy``.

    As :func:`components.training.trainer.build_training_model`: takes raw 0-255 images.
    Returns ``(model, core)``; ``core`` is the zoo model (for its MACs and layer count).
    """
    import keras

    from components.inputs.normalization import normalization_layer
    from components.models import create_model

    keras.mixed_precision.set_global_policy(policy)
    shape = tuple(info["image_shape"])
    core = create_model(name, shape, info["num_classes"], **(hparams or {}))
    raw = keras.Input(shape, name="image")
    model = keras.Model(raw, core(normalization_layer(info)(raw)), name=f"gpu-check-{name}")
    return model, core


def model_size(core) -> dict:
    """Parameters, multiply-adds per image and weight layers of a zoo model."""
    from components.models.summary import count_macs, count_weight_layers

    return {"params": int(core.count_params()), "macs_per_image": int(count_macs(core)),
            "weight_layers": int(count_weight_layers(core))}


def compile_model(model, recipe, learning_rate=None, optimizer=None) -> None:
    """Compile with ``optimizer`` (default: the recipe's, at ``learning_rate``, a float or a schedule) and a
    from-logits cross-entropy on one-hot rows (label smoothing as the recipe says); JAX compiles the
    whole step with XLA."""
    import keras

    from components.training.schedules import build_optimizer

    if optimizer is None:
        optimizer = build_optimizer(recipe.optimizer, learning_rate, recipe.ema_decay)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def device_batches(split: Split, dataset: Dataset, batch_size: int, *, seed: int = 0, start_epoch: int = 0,
                   augment: bool = True):
    """Training batches on the device: standard augmentation, one-hot rows, an endless stream."""
    from components.inputs.device import DeviceBatches

    channels = split.images.shape[-1]
    mean = dataset.info()["train_statistics"]["mean"]
    return DeviceBatches(split.images, split.labels, num_classes=dataset.num_classes, batch_size=batch_size,
                         training=True, ops=standard_ops(channels) if augment else (), fill=mean, one_hot=True,
                         seed=seed, start_epoch=start_epoch)


def block(value) -> None:
    """Wait until the device has computed ``value`` (any pytree of arrays)."""
    import jax

    jax.block_until_ready(value)


def _make_step_clock():
    """:class:`StepClock`, defined on first use so that this module imports without Keras."""
    import keras

    class StepClock(keras.callbacks.Callback):
        """When each training step finished on the device, without making the device wait between steps.

        ``async_safe``: Keras then hands each step's logs to a worker thread, where
        turning them into numbers blocks until the step is done, so that thread's
        timestamp is the step's completion time while the loop goes on dispatching.
        ``on_train_batch_begin`` (in the loop) keeps the host ahead of the device by at
        most ``ahead_s`` seconds of steps (at least one step, at most 16): enough to keep
        the device busy, little enough that a stop lands within about a step.

        Training stops once ``stop_after_s`` seconds have passed since ``origin`` (``"first"``:
        the first finished step, i.e. its compile excluded; ``"start"``: ``fit`` starting),
        counting the steps still in flight, or when the global ``deadline`` has passed.
        """

        async_safe = True

        def __init__(self, *, stop_after_s: float | None = None, origin: str = "first",
                     deadline: Deadline | None = None, ahead_s: float = 0.25, stall_s: float = 600.0):
            super().__init__()
            if origin not in ("first", "start"):
                raise ValueError(f"origin must be 'first' or 'start', got {origin!r}")
            self.stop_after_s, self.origin, self.deadline = stop_after_s, origin, deadline
            self.ahead_s, self.stall_s = ahead_s, stall_s
            self.times: list[float] = []  # completion times, perf_counter seconds
            self.dispatched = 0
            self.started = None
            self.first = None  # the first completion
            self.stopped_by = None  # "budget" or "deadline" when this clock stopped training
            self._condition = threading.Condition()

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            with self._condition:
                if not self._condition.wait_for(lambda: self.in_flight() < self._allowed_ahead(),
                                                timeout=self.stall_s):
                    raise RuntimeError(f"no training step finished in {self.stall_s:.0f} s")
                self.dispatched += 1

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            with self._condition:
                self.times.append(now)
                self.first = now if self.first is None else min(self.first, now)
                self._condition.notify_all()
                in_flight, step_s = self.in_flight(), self._last_step_s()
            if self.stop_after_s is not None:
                origin = self.first if self.origin == "first" else self.started
                if now + in_flight * step_s - origin >= self.stop_after_s:
                    self.stopped_by = self.stopped_by or "budget"
                    self.model.stop_training = True
            if self.deadline is not None and self.deadline.remaining() <= in_flight * step_s:
                self.stopped_by = self.stopped_by or "deadline"
                self.model.stop_training = True

        def in_flight(self) -> int:
            """Steps dispatched and not yet finished."""
            return self.dispatched - len(self.times)

        def _last_step_s(self) -> float:
            """The gap between the last two completions (0 before there are two)."""
            if len(self.times) < 2:
                return 0.0
            before, last = sorted(self.times[-2:])
            return last - before

        def _allowed_ahead(self) -> int:
            step_s = self._last_step_s()
            return 1 if not step_s else max(1, min(16, int(self.ahead_s / step_s)))

        # ------------------------------------------------------------ readings
        def completions(self) -> list[float]:
            return sorted(self.times)

        def first_step_s(self) -> float:
            """From ``fit`` starting to the first step finished: mostly the compile."""
            return self.completions()[0] - self.started

        def median_step_s(self, skip: int = 1) -> float:
            times = self.completions()[max(skip - 1, 0):]
            gaps = np.diff(times)
            return float(np.median(gaps)) if len(gaps) else float("nan")

        def rate(self, batch_size: int, skip: int = 1) -> float:
            """Images per second over the steps after the first ``skip`` (their compile and warm-up)."""
            times = self.completions()
            if len(times) <= skip:
                raise RuntimeError(f"only {len(times)} steps finished; cannot time the steps after {skip}")
            return (len(times) - skip) * batch_size / (times[-1] - times[skip - 1])

        def span_s(self) -> float:
            """Seconds from the first finished step to the last."""
            times = self.completions()
            return times[-1] - times[0]

    return StepClock


_STEP_CLOCK = None


def step_clock(**kwargs):
    """A new StepClock (see :func:`_make_step_clock`)."""
    global _STEP_CLOCK
    if _STEP_CLOCK is None:
        _STEP_CLOCK = _make_step_clock()
    return _STEP_CLOCK(**kwargs)


def _make_stretched_schedule():
    import keras
    from keras import ops

    class StretchedSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """A recipe schedule (defined over ``inner.total_steps``) run over ``planned`` steps instead,
        where ``planned`` is set once training has started (from the measured step rate).

        ``planned`` is an optimizer variable, so the compiled step reads its current
        value (a constant captured at trace time would not change). The whole shape is
        stretched: step ``s`` of the run takes the rate of step ``s * total / planned``.
        """

        def __init__(self, inner):
            self.inner = inner
            self.planned = None

        def attach(self, optimizer, planned_steps: int) -> None:
            """Create the ``planned`` variable in ``optimizer`` (before compiling)."""
            self.planned = optimizer.add_variable((), initializer=keras.initializers.Constant(float(planned_steps)),
                                                  dtype="float32", name="planned_steps")

        def __call__(self, step):
            stretch = self.inner.total_steps / ops.maximum(self.planned, 1.0)
            return self.inner(ops.cast(step, "float32") * stretch)

        def get_config(self):
            return {"inner": self.inner.get_config()}

    return StretchedSchedule


def stretched_schedule(inner):
    """A StretchedSchedule around a :class:`components.training.schedules.RecipeSchedule`."""
    return _make_stretched_schedule()(inner)


def score_test(model, test: Split, batch_size: int, flip: bool = False) -> dict:
    """Top-1 accuracy on ``test``; with ``flip`` also the accuracy of the mean softmax of each image
    and its mirror image (test-time horizontal flip)."""
    logits = np.asarray(model.predict(test.images, batch_size=batch_size, verbose=0), np.float32)
    result = {"test_accuracy": round(float(np.mean(np.argmax(logits, 1) == test.labels)), 4)}
    if flip:
        mirrored = np.asarray(model.predict(test.images[:, :, ::-1], batch_size=batch_size, verbose=0), np.float32)
        probabilities = _softmax(logits) + _softmax(mirrored)
        result["test_accuracy_flip"] = round(float(np.mean(np.argmax(probabilities, 1) == test.labels)), 4)
    return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def release(*objects) -> None:
    """Free a model's device memory before the next one (Keras' global state included)."""
    import gc

    import keras

    del objects
    keras.backend.clear_session()
    gc.collect()


# =========================================================================== sections
def environment() -> dict:
    """Device, backend and versions (imports JAX and Keras)."""
    import importlib.metadata

    import jax
    import keras

    from components.backend import device_kind

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {
        "device": device_kind(),  # GPU or CPU: the README table refuses CPU figures
        "device_name": devices[0].device_kind,
        "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind} for d in devices],
        "jax_backend": jax.default_backend(),
        "keras_backend": keras.backend.backend(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("jax", "jaxlib", "jax-cuda13-plugin", "keras", "numpy",
                                                      "pillow", "optree", "ml-dtypes")},
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def measure_train_rate(name: str, dataset: Dataset, policy: str, recipe, options: RunOptions,
                       deadline: Deadline) -> dict:
    """Steady-state training images/s of ``name`` under ``policy``: ``warmup_steps`` (the first
    compiles), then ``timed_steps`` timed from step completions on the device."""
    from components.training.schedules import build_schedule

    model, core = assemble_model(name, dataset.info(), policy, {"weight_decay": recipe.weight_decay})
    data = device_batches(dataset.train, dataset, options.batch_size, seed=recipe.seed)
    try:
        steps = options.warmup_steps + options.timed_steps
        compile_model(model, recipe, build_schedule(recipe.optimizer, recipe.schedule, steps, 1))
        clock = step_clock(deadline=deadline)
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
        block([v.value for v in model.trainable_variables])
        result = {"images_per_s": round(clock.rate(options.batch_size, skip=options.warmup_steps), 1),
                  "step_ms": round(1000 * clock.median_step_s(skip=options.warmup_steps), 2),
                  "compile_s": round(clock.first_step_s(), 2),
                  "timed_steps": len(clock.times) - options.warmup_steps, **model_size(core)}
        if clock.stopped_by:
            result["stopped_by"] = clock.stopped_by
        return result
    finally:
        release(model, core, data)


def resnet20_section(dataset: Dataset, options: RunOptions, deadline: Deadline, costs: CostModel,
                     log: Callable[[str], None]) -> dict:
    """ResNet-20's training images/s under each precision, with the goal for the best mixed one.

    A precision starts only if 1.5x the slowest one so far (float32 is the slowest) still fits.
    """
    recipe = tta_recipe(options)
    by_precision: dict[str, dict] = {}
    slowest_s = None
    for policy in options.precisions:
        if not deadline.allows(1.5 * slowest_s if slowest_s else None):
            by_precision[policy] = not_run()
            continue
        started = time.perf_counter()
        try:
            entry = {"status": "ok", **measure_train_rate("resnet20", dataset, policy, recipe, options, deadline)}
            costs.observe(layers=entry["weight_layers"], compile_s=entry["compile_s"], macs=entry["macs_per_image"],
                          batch_size=options.batch_size, step_s=entry["step_ms"] / 1000)
        except Exception as error:  # one precision failing (say, no fp16 kernels) must not hide the others
            entry = error_entry(error)
        entry["elapsed_s"] = round(time.perf_counter() - started, 1)
        slowest_s = max(slowest_s or 0.0, entry["elapsed_s"])
        by_precision[policy] = entry
        log(f"[gpu-check] resnet20 {policy}: {entry.get('images_per_s', entry['status'])} img/s, "
            f"compile {entry.get('compile_s')} s")
    mixed = {p: e["images_per_s"] for p, e in by_precision.items() if p.startswith("mixed") and "images_per_s" in e}
    best = max(mixed, key=mixed.get) if mixed else None
    compiles = [e["compile_s"] for e in by_precision.values() if "compile_s" in e]
    return {"model": "resnet20", "batch_size": options.batch_size, "xla": True, "by_precision": by_precision,
            "best_mixed_precision": best, "images_per_s": mixed.get(best),
            "goal_images_per_s": GOAL_RESNET20_IMAGES_PER_S,
            "met": bool(best and mixed[best] >= GOAL_RESNET20_IMAGES_PER_S),
            "max_compile_s": max(compiles) if compiles else None}


def measure_input_rate(dataset: Dataset, options: RunOptions) -> dict:
    """Batches/s of :class:`DeviceBatches` alone (standard augmentation, one-hot rows), after a warm-up."""
    data = device_batches(dataset.train, dataset, options.batch_size)
    for index in range(3):  # compiles the gather + augmentation
        block(data[index])
    started = time.perf_counter()
    last = None
    for index in range(3, 3 + options.input_batches):
        last = data[index]
    block(last)
    seconds = time.perf_counter() - started
    release(data)
    batches_per_s = options.input_batches / seconds
    return {"batches_per_s": round(batches_per_s, 1), "images_per_s": round(batches_per_s * options.batch_size, 1),
            "batch_size": options.batch_size, "ops": list(standard_ops(dataset.train.images.shape[-1])),
            "batches_timed": options.input_batches}


def input_section(dataset: Dataset, options: RunOptions, train_rate: float | None) -> dict:
    """The input's rate against the training rate it must feed (goal: >= 3x)."""
    result = measure_input_rate(dataset, options)
    ratio = result["images_per_s"] / train_rate if train_rate else None
    return {**result, "train_images_per_s": train_rate, "input_over_train": round(ratio, 2) if ratio else None,
            "goal_input_over_train": GOAL_INPUT_OVER_TRAIN, "met": bool(ratio and ratio >= GOAL_INPUT_OVER_TRAIN)}


def plan_steps(*, budget_s: float, spent_s: float, step_s: float, steps_per_epoch: int, safety: float = 0.95) -> int:
    """Steps that fit in what is left of the budget at ``step_s`` seconds a step: whole epochs when at least
    one fits, else the steps that fit (>= 1).

    ``safety`` leaves 5% for what a step time misses (epoch ends, the host catching up).
    """
    steps = int(max(budget_s - spent_s, 0.0) * safety / step_s)
    return steps // steps_per_epoch * steps_per_epoch if steps >= steps_per_epoch else max(steps, 1)


def time_to_accuracy(dataset: Dataset, options: RunOptions, deadline: Deadline,
                     log: Callable[[str], None]) -> dict:
    """Train ``options.tta_model`` for at most ``tta_budget_s`` seconds (compile excluded), then score the test split.

    1. compile, then ``tta_probe_steps`` steps under a provisional schedule length (the
       one-cycle ramp starts near zero, so these steps barely depend on it);
    2. from their step time, plan whole epochs that fill the rest of the budget and
       stretch the schedule over them (:class:`StretchedSchedule`);
    3. train those epochs (a fresh stream starting at epoch 1, its augmentation compiled
       before the clock starts); a clock stops training at the budget in any case;
    4. score the test split once, plain and with the flip average (RGB only).
    """
    recipe = tta_recipe(options)
    model, core = assemble_model(options.tta_model, dataset.info(), "mixed_bfloat16",
                                 {"weight_decay": recipe.weight_decay})
    probe_data = device_batches(dataset.train, dataset, options.batch_size, seed=recipe.seed)
    train_data = None
    per_epoch = probe_data.steps_per_epoch
    try:
        schedule = _compile_stretched(model, recipe, per_epoch)
        probe = step_clock(stop_after_s=options.tta_budget_s, deadline=deadline)
        model.fit(probe_data, steps_per_epoch=options.tta_probe_steps, epochs=1, verbose=0, shuffle=False,
                  callbacks=[probe])
        block([v.value for v in model.trainable_variables])
        step_s = probe.median_step_s(skip=1)
        probe_train_s = probe.span_s() + step_s  # plus the first step's own compute, without its compile
        main_steps = plan_steps(budget_s=options.tta_budget_s, spent_s=probe_train_s, step_s=step_s,
                                steps_per_epoch=per_epoch)
        planned = len(probe.times) + main_steps
        schedule.planned.assign(float(planned))
        log(f"[gpu-check] time_to_accuracy: {options.tta_model} {options.batch_size / step_s:,.0f} img/s, "
            f"planned {planned} steps ({planned / per_epoch:.1f} epochs)")

        train_data = device_batches(dataset.train, dataset, options.batch_size, seed=recipe.seed, start_epoch=1)
        block(train_data[0])  # compiles this stream's gather + augmentation outside the clock
        # fit's own start-up counts as training time: the clock starts with fit
        clock = step_clock(stop_after_s=options.tta_budget_s - probe_train_s, origin="start", deadline=deadline)
        epochs, steps = (main_steps // per_epoch, per_epoch) if main_steps >= per_epoch else (1, main_steps)
        history = model.fit(train_data, steps_per_epoch=steps, epochs=epochs, verbose=0, shuffle=False,
                            callbacks=[clock])
        block([v.value for v in model.trainable_variables])
        train_s = probe_train_s + clock.completions()[-1] - clock.started
        steps_done = len(probe.times) + len(clock.times)
        started = time.perf_counter()
        scores = score_test(model, dataset.test, options.eval_batch_size,
                               flip=dataset.train.images.shape[-1] == 3)
        result = {
            "model": options.tta_model, **model_size(core), "precision": "mixed_bfloat16",
            "batch_size": options.batch_size, "recipe": _recipe_summary("fast_onecycle", recipe),
            "train_images": len(dataset.train), "validation_images": 0, "test_images": len(dataset.test),
            "budget_s": options.tta_budget_s, "train_time_s": round(train_s, 2),
            "compile_s": round(probe.first_step_s(), 2), "planned_steps": planned, "steps_done": steps_done,
            "epochs_done": round(steps_done / per_epoch, 2), "schedule_completed": steps_done >= planned,
            "images_per_s": round(steps_done * options.batch_size / train_s, 1),
            "final_train_accuracy": round(float(history.history["accuracy"][-1]), 4) if history.history else None,
            **scores, "score_s": round(time.perf_counter() - started, 2), "goal_test_accuracy": GOAL_TEST_ACCURACY,
            # met: the goal's accuracy (flip allowed) within the budget (2% over: the last steps in flight)
            "met": bool(max(scores.values()) >= GOAL_TEST_ACCURACY and train_s <= options.tta_budget_s * 1.02),
        }
        if clock.stopped_by or probe.stopped_by:
            result["stopped_by"] = clock.stopped_by or probe.stopped_by
        return result
    finally:
        release(model, core, probe_data, train_data)


def _compile_stretched(model, recipe, steps_per_epoch: int):
    """Compile ``model`` with the recipe's optimizer on a :class:`StretchedSchedule` whose length is set later."""
    from components.training.schedules import RecipeSchedule, build_optimizer

    reference_steps = 100 * steps_per_epoch  # the inner schedule's own length; only its shape matters
    schedule = stretched_schedule(RecipeSchedule(recipe.optimizer.learning_rate, steps_per_epoch, reference_steps,
                                                 dataclasses.asdict(recipe.schedule)))
    optimizer = build_optimizer(recipe.optimizer, schedule, recipe.ema_decay)
    schedule.attach(optimizer, reference_steps)
    compile_model(model, recipe, optimizer=optimizer)
    return schedule


def _recipe_summary(base: str, recipe) -> dict:
    return {"base": base, "optimizer": dataclasses.asdict(recipe.optimizer), "schedule": recipe.schedule.name,
            "weight_decay": recipe.weight_decay, "label_smoothing": recipe.label_smoothing,
            "augment": list(recipe.augment)}


def train_zoo_model(name: str, dataset: Dataset, recipe, options: RunOptions, deadline: Deadline,
                    costs: CostModel) -> dict:
    """Train ``name`` on the zoo's fixed budget and score it; skipped when the deadline would not allow it."""
    from components.training.schedules import build_schedule

    hparams = {"weight_decay": recipe.weight_decay} if recipe.weight_decay is not None else {}
    model, core = assemble_model(name, dataset.info(), "mixed_bfloat16", hparams)
    data = device_batches(dataset.train, dataset, options.batch_size, seed=recipe.seed)
    try:
        size = model_size(core)
        steps = max(1, round(options.zoo_epochs * data.steps_per_epoch))
        estimate = costs.predict(layers=size["weight_layers"], macs=size["macs_per_image"],
                                 batch_size=options.batch_size, steps=steps, eval_images=len(dataset.test))
        predicted = {"predicted_s": round(estimate, 1) if estimate else None}
        if not deadline.allows(estimate):
            return {**not_run(), **size, **predicted}
        started = time.perf_counter()
        compile_model(model, recipe, build_schedule(recipe.optimizer, recipe.schedule, data.steps_per_epoch, 1))
        clock = step_clock(deadline=deadline)
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
        block([v.value for v in model.trainable_variables])
        done = len(clock.times)
        result = {"status": "ok" if done == steps else "stopped (deadline)", **size,
                  "train_images": done * options.batch_size, "compile_s": round(clock.first_step_s(), 2),
                  "images_per_s": round(clock.rate(options.batch_size, skip=1), 1) if done > 1 else None,
                  "step_ms": round(1000 * clock.median_step_s(skip=1), 2) if done > 1 else None}
        if done == steps:  # a model cut short is not scored: its accuracy would not compare
            result.update(score_test(model, dataset.test, options.eval_batch_size))
        result.update(elapsed_s=round(time.perf_counter() - started, 1), **predicted)
        if done > 1:
            costs.observe(layers=size["weight_layers"], compile_s=result["compile_s"], macs=size["macs_per_image"],
                          batch_size=options.batch_size, step_s=result["step_ms"] / 1000)
        return result
    finally:
        release(model, core, data)


# The zoo's order: fewest weight layers first (XLA's compile time grows with them, and it is most of
# a short run), so the deadline leaves out the costliest models, not the cheap ones after them.
# Counts at 32x32 from components.models.summary (2026-12-01); a model not listed runs after these.
ZOO_ORDER = ("baseline", "mlp", "alexnet", "lenet5", "ynet", "alexnet8", "vgg11", "vgg13", "vgg16", "vgg19",
             "resnet20", "resnet18", "inception10", "resnet32", "resnet34", "resnet44", "resnet50v2", "resnet56",
             "googlenet", "resnet56v2", "densenet", "densenet_bc_100", "resnet101v2", "resnet110", "resnet110v2",
             "resnet152v2", "resnet164v2", "resnet200v2")


def zoo_order(models: Iterable[str]) -> list[str]:
    """``models`` in :data:`ZOO_ORDER`, the others after them in the order given."""
    rank = {name: index for index, name in enumerate(ZOO_ORDER)}
    return sorted(models, key=lambda name: rank.get(name, len(rank)))


# No model builds, compiles, trains and scores in less; with less left the zoo stops (building a
# big model just to skip it takes seconds too).
MIN_MODEL_S = 10.0


def run_zoo(models: Iterable[str], train_one: Callable[[str], dict], deadline: Deadline,
            on_update: Callable[[dict], None], log: Callable[[str], None] = print,
            min_start_s: float = MIN_MODEL_S) -> dict:
    """Each model in turn through ``train_one``, the deadline checked before each (``train_one`` checks its
    own prediction too); an error is recorded and the next model goes on. Models not started in time
    stay ``not run (deadline)``: nothing is estimated for them."""
    entries: dict[str, dict] = {name: not_run() for name in models}
    for name in entries:
        if deadline.remaining() < min_start_s:
            break
        try:
            entries[name] = train_one(name)
        except Exception as error:
            entries[name] = error_entry(error)
        log(f"[gpu-check] zoo {name}: {entries[name]['status']} "
            f"{entries[name].get('images_per_s') or ''} {entries[name].get('test_accuracy') or ''}".rstrip())
        on_update(entries)
    return entries


def zoo_section(dataset: Dataset, options: RunOptions, deadline: Deadline, costs: CostModel,
                results: Results, input_rate: float | None, log: Callable[[str], None]) -> dict:
    """Every model (or ``options.zoo_models``) on the fixed budget; the JSON is updated after each model."""
    from components.models import list_models

    recipe = zoo_recipe(options)
    models = options.zoo_models or zoo_order(list_models())
    per_epoch = len(dataset.train) // options.batch_size
    header = {"dataset": dataset.name, "precision": "mixed_bfloat16", "batch_size": options.batch_size,
              "recipe": _recipe_summary("tutorial_adam_5ep", recipe),
              "budget_train_images": max(1, round(options.zoo_epochs * per_epoch)) * options.batch_size,
              "budget_epochs": options.zoo_epochs, "test_images": len(dataset.test)}

    def update(entries):
        results.set("zoo", {"status": "running", **header, "models": entries})

    entries = run_zoo(models, lambda name: train_zoo_model(name, dataset, recipe, options, deadline, costs),
                      deadline, update, log)
    rates = {name: e["images_per_s"] for name, e in entries.items() if e.get("images_per_s")}
    # The input is a bottleneck for a model whose training rate is over a third of the input's.
    bound = sorted(n for n, r in rates.items() if input_rate and r * GOAL_INPUT_OVER_TRAIN > input_rate)
    return {**header, "models": entries, "run": sum(e["status"] == "ok" for e in entries.values()),
            "not_run": sorted(n for n, e in entries.items() if e["status"].startswith("not run")),
            "input_bound_models": bound if input_rate else None}


# =========================================================================== the run
def run_check(bundle: str | os.PathLike, out_dir: str | os.PathLike, options: RunOptions,
              log: Callable[[str], None] = print, deadline: Deadline | None = None) -> dict:
    """The whole check; writes ``<out_dir>/gpu_check.json`` after every section and returns its content.

    Raises GpuCheckError (after writing it into the JSON) when the bundle or the decoded
    pixels fail their checks: nothing measured on other pixels would compare.
    """
    deadline = deadline or Deadline(options.deadline_s)
    bundle = pathlib.Path(bundle)
    results = Results(pathlib.Path(out_dir) / RESULT_FILE, {
        "status": "running", "quick": options.quick, "device": "unknown",
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "deadline_s": options.deadline_s, "options": dataclasses.asdict(options)})

    def finish(status: str) -> dict:
        results.data["elapsed_s"] = round(deadline.elapsed(), 1)
        results.set("status", status)
        return results.data

    try:  # the data first: its decoding forks workers, which is safe only before JAX starts its threads
        manifest = load_manifest(bundle)
        results.set("bundle", {"built_at": manifest.get("built_at"), "git": manifest.get("git")})
        verify_files(bundle, manifest)
        datasets, data_report = load_datasets(bundle, manifest, options)
    except GpuCheckError as error:
        results.set("data", {"status": "error", "error": str(error)})
        finish("failed")
        raise
    results.set("data", data_report)
    log(f"[gpu-check] data verified in {data_report['cifar10']['decode_s']} s: cifar10 "
        f"{data_report['train_images']} train / {data_report['test_images']} test images")
    env = environment()
    results.data["device"] = env["device"]
    results.set("environment", env)
    log(f"[gpu-check] {env['device']} ({env['device_name']}), keras {env['versions']['keras']} on "
        f"jax {env['versions']['jax']}, deadline {options.deadline_s:.0f} s")

    run_sections(datasets, options, deadline, results, log)
    return finish("complete")


def run_sections(datasets: dict[str, Dataset], options: RunOptions, deadline: Deadline, results: Results,
                 log: Callable[[str], None]) -> None:
    """The measuring sections in order, each written as it ends; each later one uses what the earlier ones
    measured (the training rate the input must feed, compile times for the deadline's predictions)."""
    dataset, costs = datasets["cifar10"], CostModel()
    train_rate = input_rate = None
    if "resnet20" in options.sections:
        section = guarded(lambda: resnet20_section(dataset, options, deadline, costs, log), deadline, None)
        results.set("resnet20", section)
        train_rate = section.get("images_per_s")
    if "input" in options.sections:
        section = guarded(lambda: input_section(dataset, options, train_rate), deadline, None)
        results.set("input", section)
        input_rate = section.get("images_per_s")
    if "time_to_accuracy" in options.sections:
        # Its budget plus two compiles (training, forward) of a net as deep as ResNet-20, and scoring.
        compile_s = (results.data.get("resnet20") or {}).get("max_compile_s") or 0.0
        estimate = options.tta_budget_s * 1.1 + 2 * compile_s
        results.set("time_to_accuracy",
                    guarded(lambda: time_to_accuracy(dataset, options, deadline, log), deadline, estimate))
    if "zoo" in options.sections:
        zoo_data = datasets[options.zoo_dataset]
        rate = input_rate if options.zoo_dataset == "cifar10" else None  # the input was measured on CIFAR-10
        results.set("zoo", guarded(lambda: zoo_section(zoo_data, options, deadline, costs, results, rate, log),
                                   deadline, None))


def load_datasets(bundle: pathlib.Path, manifest: dict, options: RunOptions) -> tuple[dict[str, Dataset], dict]:
    """The verified data sets by name (CIFAR-10, and Fashion-MNIST when carried), cut to the quick
    subsets, and the data report (every carried data set's digests)."""
    cifar10, report = load_cifar10(bundle, manifest, options.decode_workers)
    datasets, report = {"cifar10": cifar10}, {"status": "ok", "cifar10": report}
    fashion = load_fashion_mnist(bundle, manifest)
    if fashion:
        datasets["fashion_mnist"], report["fashion_mnist"] = fashion
    if options.zoo_dataset not in datasets:
        raise GpuCheckError(f"{bundle / MANIFEST_FILE}: --zoo-dataset {options.zoo_dataset}, but the bundle does not "
                            "carry it (build with --fashion-mnist)")
    datasets = {name: d.head(options.train_subset, options.test_subset) for name, d in datasets.items()}
    report["train_images"], report["test_images"] = len(datasets["cifar10"].train), len(datasets["cifar10"].test)
    return datasets, report


def guarded(section: Callable[[], dict], deadline: Deadline, estimate_s: float | None) -> dict:
    """``section()`` as ``{"status": "ok", ...}``, or ``not run (deadline)`` when ``estimate_s`` does not fit,
    or the error it raised (the run goes on with the next section)."""
    if not deadline.allows(estimate_s):
        return not_run()
    started = time.perf_counter()
    try:
        result = section()
    except Exception as error:
        return {**error_entry(error), "elapsed_s": round(time.perf_counter() - started, 1)}
    return {"status": "ok", **result, "elapsed_s": round(time.perf_counter() - started, 1)}


# =========================================================================== report
def render_markdown(results: dict, source: str = RESULT_FILE) -> str:
    """The README's GPU-check section body from a real GPU run; GpuCheckError for quick or CPU results."""
    if results.get("quick") or results.get("device") != "GPU":
        raise GpuCheckError(f"{source}: quick={results.get('quick')}, device={results.get('device')}: these are "
                            "not GPU figures; run `bash build/gpu-check/run.sh` on the GPU machine and report that")
    env = results.get("environment", {})
    versions = env.get("versions", {})
    lines = [f"Measured on {env.get('device_name')} ({results.get('started_at', '')[:10]}), Keras "
             f"{versions.get('keras')} on JAX {versions.get('jax')}, Python {env.get('python')}; "
             f"whole run {results.get('elapsed_s')} s of a {results.get('deadline_s'):.0f} s deadline "
             f"(`python -m pipeline.gpu_check report gpu_check.json`).", ""]
    lines += _goals_table(results)
    zoo = results.get("zoo", {})
    if zoo.get("models"):
        lines += ["", f"Zoo, {zoo.get('budget_train_images'):,} training images each ({zoo.get('budget_epochs')} "
                      f"epoch, Adam 1e-3, batch {zoo.get('batch_size')}, bf16, standard augmentation), "
                      f"test accuracy on {zoo.get('test_images'):,} images:", "",
                  "| model | params | MACs/image | train img/s | compile s | test acc. | status |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, entry in zoo["models"].items():
            lines.append(f"| {name} | {_count(entry.get('params'))} | {_count(entry.get('macs_per_image'))} | "
                         f"{_number(entry.get('images_per_s'))} | {_number(entry.get('compile_s'), 1)} | "
                         f"{_percent(entry.get('test_accuracy'))} | {entry.get('status')} |")
    return "\n".join(lines) + "\n"


def _goals_table(results: dict) -> list[str]:
    rows = ["| check | measured | goal | met |", "| --- | ---: | ---: | --- |"]
    resnet = results.get("resnet20", {})
    for policy, entry in resnet.get("by_precision", {}).items():
        goal = f"{GOAL_RESNET20_IMAGES_PER_S:,}" if policy.startswith("mixed") else ""
        met = _yes(entry.get("images_per_s", 0) >= GOAL_RESNET20_IMAGES_PER_S) if goal and "images_per_s" in entry \
            else ""
        rows.append(f"| ResNet-20 train img/s, {policy}, batch {resnet.get('batch_size')} | "
                    f"{_number(entry.get('images_per_s')) if 'images_per_s' in entry else entry.get('status')} | "
                    f"{goal} | {met} |")
    inputs = results.get("input", {})
    if "images_per_s" in inputs:
        rows.append(f"| DeviceBatches img/s (standard aug.) / ResNet-20 train img/s | "
                    f"{_number(inputs['images_per_s'])} / {_number(inputs.get('train_images_per_s'))} = "
                    f"{inputs.get('input_over_train')}x | >= {GOAL_INPUT_OVER_TRAIN:g}x | {_yes(inputs.get('met'))} |")
    tta = results.get("time_to_accuracy", {})
    if "test_accuracy" in tta:
        flip = f", {_percent(tta.get('test_accuracy_flip'))} with flip" if "test_accuracy_flip" in tta else ""
        rows.append(f"| {tta['model']} test acc. after {tta['train_time_s']} s of training ({tta['epochs_done']} "
                    f"epochs, one-cycle SGD, bf16) | {_percent(tta['test_accuracy'])}{flip} | "
                    f"{_percent(tta.get('goal_test_accuracy'))} in {tta.get('budget_s'):g} s | {_yes(tta.get('met'))} |")
    elif tta:
        rows.append(f"| time to accuracy | {tta.get('status')} | | |")
    return rows


def _yes(value) -> str:
    return "yes" if value else "no"


def _number(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _count(value) -> str:
    if value is None:
        return ""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)
