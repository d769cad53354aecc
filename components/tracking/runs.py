"""MLflow runs of the train stage: one experiment per data set, one run per training.

Everything MLflow-specific the trainer needs is here: the run's start (or continuation
after a resumed checkpoint), its params, tags and data set input, a Keras callback for
the per-epoch metrics, and the artifacts and registered model at the end. A run that
raises ends FAILED with the error recorded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import subprocess
import tempfile
from typing import Any, Iterator

import keras
import numpy as np

from components.tracking.store import REPO_ROOT

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time_s", "images_per_s")


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config as flat ``a.b.c`` keys (MLflow params are flat strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return flat


def git_commit() -> str:
    """The repository's HEAD commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dataset_fingerprint(data_dir: pathlib.Path) -> str:
    """sha256 of ``dataset_info.json``: it records every shard's count and the raw files' checksums."""
    return hashlib.sha256((data_dir / "dataset_info.json").read_bytes()).hexdigest()[:16]


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics to the active run at step = epoch number (1-based)."""

    def on_epoch_end(self, epoch, logs=None):
        import mlflow

        values = {k: float(v) for k, v in (logs or {}).items() if k in EPOCH_METRICS}
        mlflow.log_metrics(values, step=epoch + 1)


def backfill_epochs(run_id: str, history: list[dict]) -> int:
    """Log the epochs of a resumed checkpoint that the run lacks; returns how many.

    The checkpoint is written before the epoch's metrics reach MLflow, so a run killed
    in between resumes with that epoch missing from MLflow but present in the
    checkpoint's history. Epochs MLflow already has are not logged again.
    """
    import mlflow

    client = mlflow.MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, "val_accuracy")}
    missing = [row for row in history if row["epoch"] not in logged]
    for row in missing:
        mlflow.log_metrics({k: float(v) for k, v in row.items() if k in EPOCH_METRICS}, step=int(row["epoch"]))
    return len(missing)


@contextlib.contextmanager
def training_run(experiment_name: str, run_name: str, resume_run_id: str | None = None,
                 log=print) -> Iterator[Any]:
    """Start (or continue) the MLflow run; end it FAILED with the error if the body raises."""
    import mlflow

    if mlflow.get_experiment_by_name(experiment_name) is None:
        artifacts = None
        if mlflow.get_tracking_uri().startswith("sqlite:"):
            # Keep artifacts beside the SQLite file rather than in whatever directory we run from.
            database = pathlib.Path(mlflow.get_tracking_uri().removeprefix("sqlite:///"))
            artifacts = (database.parent / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment_name, artifact_location=artifacts)
    mlflow.set_experiment(experiment_name)
    run = mlflow.start_run(run_id=resume_run_id, run_name=None if resume_run_id else run_name,
                           log_system_metrics=True)
    if resume_run_id:
        log(f"[mlflow] continuing run {resume_run_id}")
    try:
        yield run
    except BaseException as error:
        mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_run_inputs(config: dict, data_dir: pathlib.Path, dataset: str, stage: str) -> None:
    """Params (the resolved config), tags (git commit, DVC stage) and the data set input."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    mlflow.log_params(flatten(config))
    mlflow.set_tags({"git_commit": git_commit(), "dvc_stage": stage})
    source = LocalArtifactDatasetSource(str(data_dir.resolve()))
    mlflow.log_input(MetaDataset(source, name=dataset, digest=dataset_fingerprint(data_dir)), context="training")


def log_run_outputs(model_dir: pathlib.Path, metrics: dict, registered_name: str | None) -> dict:
    """Final figures, artifacts, and the model with signature and input example (registered
    as ``registered_name`` unless None), from the assembled ``model_dir`` before it is
    published; returns ``metrics`` with the run id, registered name and version filled in.

    ``train_metrics.json`` is logged from those completed metrics, byte for byte the file
    the trainer then writes into ``model_dir``.
    """
    import mlflow
    from mlflow.models import infer_signature

    from components.training.trainer import metrics_json

    # Run-level summaries, named apart from the per-epoch series ("images_per_s" is one).
    summary = {"best_val_accuracy": metrics.get("best_val_accuracy"), "train_time_s": metrics.get("train_time_s"),
               "median_images_per_s": metrics.get("images_per_s")}
    mlflow.log_metrics({k: float(v) for k, v in summary.items() if v is not None})
    for name in ("history.csv", "learning_curves.png", "model_summary.txt"):
        mlflow.log_artifact(str(model_dir / name))
    model = keras.saving.load_model(model_dir / "model.keras")
    example = np.zeros((2, *model.input_shape[1:]), np.uint8)
    signature = infer_signature(example, keras.ops.convert_to_numpy(model(example)))
    with tempfile.TemporaryDirectory() as scratch:
        # mlflow.keras.log_model (3.17) writes the input example before creating its
        # directory and fails; save_model into an existing directory avoids that.
        local = pathlib.Path(scratch) / "model"
        local.mkdir()
        mlflow.keras.save_model(model, str(local), signature=signature, input_example=example)
        mlflow.log_artifacts(str(local), artifact_path="model")
    run_id = mlflow.active_run().info.run_id
    version = None
    if registered_name:
        version = str(mlflow.register_model(f"runs:/{run_id}/model", registered_name).version)
    completed = {**metrics, "mlflow_run_id": run_id, "registered_model_name": registered_name,
                 "registered_model_version": version}
    mlflow.log_text(metrics_json(completed).decode(), "train_metrics.json")
    return completed
