"""The prepared splits as MLflow data sets: one name, digest and context per split.

A run records which data it saw as *inputs* (train and validation when it trains, test
when its model is evaluated), and metrics name the data set they were computed on. Both
need the same (name, digest) pair for a split, so it is made here and nowhere else.

Why each split has its own name: MLflow keeps one input per (name, digest) and run, so
three splits under one name and digest would collapse into one input and lose two
contexts. ``cifar10-train``, ``cifar10-validation`` and ``cifar10-test`` follow the
shards' own file names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Any

from components.data.info import INFO_FILE

# The split's role, as MLflow's input tag ``mlflow.data.context`` records it.
CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}
DIGEST_CHARS = 16  # of the sha256 hex digest: plenty to tell prepared data sets apart, short in the UI


@dataclasses.dataclass(frozen=True)
class TrackedSplit:
    """One split as the tracking store sees it: the MLflow data set and the context it is used in."""

    entity: Any  # mlflow.entities.Dataset (opaque here, so callers need no MLflow types)
    context: str

    @property
    def name(self) -> str:
        return self.entity.name

    @property
    def digest(self) -> str:
        return self.entity.digest


def split_name(dataset: str, split: str) -> str:
    """The MLflow data set name of ``split`` of ``dataset`` (``cifar10-test``)."""
    return f"{dataset}-{split}"


def split_digest(data_dir: str | pathlib.Path, split: str) -> str:
    """A fingerprint of ``split`` of the prepared directory ``data_dir``.

    The directory's metadata file (``INFO_FILE``) records every split's shards and
    counts and the raw files' checksums, so its bytes identify the prepared data; hashing
    them after the split's name gives each split its own digest, and any re-preparation
    that changes the data changes all three.
    """
    if split not in CONTEXTS:
        raise ValueError(f"split {split!r}: expected one of {sorted(CONTEXTS)}")
    info = pathlib.Path(data_dir) / INFO_FILE
    try:
        content = info.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{info}: not found, so split {split!r} has no digest; prepare the data set "
                                f"first (`python -m pipeline.prepare --dataset {pathlib.Path(data_dir).name}`)") from None
    return hashlib.sha256(split.encode() + b"\0" + content).hexdigest()[:DIGEST_CHARS]


def tracked_split(data_dir: str | pathlib.Path, dataset: str, split: str) -> TrackedSplit:
    """``split`` of ``dataset``, prepared in ``data_dir``, as an MLflow data set with its context."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset

    data_dir = pathlib.Path(data_dir)
    source = LocalArtifactDatasetSource(str(data_dir.resolve()))
    meta = MetaDataset(source, name=split_name(dataset, split), digest=split_digest(data_dir, split))
    return TrackedSplit(Dataset(**meta.to_dict()), CONTEXTS[split])


def log_splits(run_id: str, splits: list[TrackedSplit]) -> None:
    """Record ``splits`` as inputs of run ``run_id``, each with its context (again: a no-op)."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [DatasetInput(s.entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, s.context)]) for s in splits]
    mlflow.MlflowClient().log_inputs(run_id, datasets=inputs)
