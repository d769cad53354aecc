"""MLflow runs of the train stage: one experiment per data set, one run per training.

Everything MLflow-specific the trainer needs is here: the run's start (or continuation
after a resumed checkpoint) in an experiment marked for model training, its params, tags
and its train and validation inputs, a Keras callback for the per-epoch metrics, and at
the end the summary metrics, artifacts and the model as a LoggedModel, registered from
``models:/<model_id>``. A run that raises ends FAILED with the error recorded.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
from typing import Any, Iterator, Mapping

import keras

from components.tracking.datasets import log_splits, tracked_split
from components.tracking.logged_model import check_mlflow_version, log_keras_model
from components.tracking.metrics import log_model_metrics
from components.tracking.store import REPO_ROOT
from components.tracking.views import experiment_tags

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


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created if missing, tagged as a model-training
    experiment with the key-metrics runs view (:mod:`components.tracking.views`).

    A new experiment on a SQLite store keeps its artifacts beside the database file, not
    in whatever directory the stage runs from. Experiments made before the tags existed
    get them too; tags already in place are not written again.
    """
    import mlflow

    wanted = experiment_tags()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, artifact_location=_artifact_location(mlflow.get_tracking_uri()),
                                        tags=wanted)
    client = mlflow.MlflowClient()
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def _artifact_location(tracking_uri: str) -> str | None:
    """``mlartifacts/`` beside the SQLite file of ``tracking_uri``; None (the server decides) otherwise."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = pathlib.Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "mlartifacts").as_uri()


@contextlib.contextmanager
def training_run(experiment_name: str, run_name: str, resume_run_id: str | None = None,
                 log=print) -> Iterator[Any]:
    """Start (or continue) the MLflow run in experiment ``experiment_name``; end it FAILED
    with the error if the body raises.

    System metrics (CPU, memory, disk, network, and NVIDIA GPUs through ``nvidia-ml-py``
    when one is present) are sampled for the run's duration.
    """
    import mlflow

    check_mlflow_version()  # before training, not after it
    mlflow.set_experiment(experiment_id=ensure_experiment(experiment_name))
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


def dvc_experiment_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``dvc_experiment`` and ``dvc_baseline_rev`` when ``dvc exp run`` (queued, ``--temp`` or in
    the workspace) runs the stage: DVC sets ``DVC_EXP_NAME`` and ``DVC_EXP_BASELINE_REV``.
    Links the MLflow run to the row of ``dvc exp show``; empty under plain ``dvc repro``."""
    names = {"DVC_EXP_NAME": "dvc_experiment", "DVC_EXP_BASELINE_REV": "dvc_baseline_rev"}
    return {tag: environ[variable] for variable, tag in names.items() if environ.get(variable)}


def log_run_inputs(config: dict, data_dir: pathlib.Path, dataset: str, stage: str) -> None:
    """Params (the resolved config), tags (git commit, DVC stage), and the train and
    validation splits of ``dataset`` (prepared in ``data_dir``) as the run's inputs."""
    import mlflow

    mlflow.log_params(flatten(config))
    mlflow.set_tags({"git_commit": git_commit(), "dvc_stage": stage, **dvc_experiment_tags()})
    run_id = mlflow.active_run().info.run_id
    log_splits(run_id, [tracked_split(data_dir, dataset, split) for split in ("train", "validation")])


def exported_val_accuracy(metrics: dict) -> float | None:
    """Validation accuracy of the exported weights: the chosen candidate's when there were
    two (best epoch or weight average), else the best epoch's."""
    candidates = metrics.get("export_candidates") or {}
    chosen = candidates.get(metrics.get("exported_weights"))
    return chosen["val_accuracy"] if chosen else metrics.get("best_val_accuracy")


def with_tracking_ids(metrics: dict, run_id: str, model_id: str, registered_name: str | None,
                      version: str | None) -> dict:
    """``metrics`` with the MLflow ids filled in, in place of the trainer's empty ones: the run id,
    the LoggedModel id right after it, the registered name and version."""
    ids = {"mlflow_run_id": run_id, "mlflow_model_id": model_id, "registered_model_name": registered_name,
           "registered_model_version": version}
    completed: dict = {}
    for key, value in metrics.items():
        if key == "mlflow_run_id":
            completed.update(mlflow_run_id=run_id, mlflow_model_id=model_id)
        elif key != "mlflow_model_id":
            completed[key] = ids.get(key, value)
    for key, value in ids.items():  # the trainer's dict lacked some: at the end
        completed.setdefault(key, value)
    return completed


def training_summaries(metrics: dict) -> dict[str, float]:
    """Training time and the median training throughput of the epochs after the first, named
    apart from the per-epoch series (``images_per_s`` is one) and from inference's ``test_images_per_s``."""
    values = {"train_time_s": metrics.get("train_time_s"), "train_images_per_s": metrics.get("images_per_s")}
    return {key: float(value) for key, value in values.items() if value is not None}


def log_run_outputs(model_dir: pathlib.Path, metrics: dict, registered_name: str | None, *,
                    data_dir: pathlib.Path) -> dict:
    """Summary metrics, artifacts, and the model as a LoggedModel with signature and input
    example (registered as ``registered_name`` from ``models:/<model_id>`` unless None),
    from the assembled ``model_dir`` before it is published; returns ``metrics`` with the
    run id, LoggedModel id, registered name and version filled in.

    The summaries are linked to the LoggedModel, the validation accuracy also to the
    validation split (of ``data_dir``), so the model's page shows what it scored on what.
    ``train_metrics.json`` is logged from the completed metrics, byte for byte the file the
    trainer then writes into ``model_dir``.
    """
    import mlflow

    from components.training.trainer import metrics_json

    run_id = mlflow.active_run().info.run_id
    for name in ("history.csv", "learning_curves.png", "model_summary.txt"):
        mlflow.log_artifact(str(model_dir / name))
    model = keras.saving.load_model(model_dir / "model.keras")
    params = mlflow.MlflowClient().get_run(run_id).data.params  # the LoggedModel carries the run's config
    logged = log_keras_model(model, metrics["experiment"], run_id, params=params,
                             tags={"weights_sha256": metrics.get("weights_sha256"),
                                   "exported_weights": metrics.get("exported_weights")})
    validation = exported_val_accuracy(metrics)
    if validation is not None:
        log_model_metrics(run_id, {"exported_val_accuracy": float(validation)}, model_id=logged.model_id,
                          split=tracked_split(data_dir, metrics["dataset"], "validation"))
    log_model_metrics(run_id, training_summaries(metrics), model_id=logged.model_id)
    version = None
    if registered_name:
        version = str(mlflow.register_model(f"models:/{logged.model_id}", registered_name).version)
    completed = with_tracking_ids(metrics, run_id, logged.model_id, registered_name, version)
    mlflow.log_text(metrics_json(completed).decode(), "train_metrics.json")
    return completed
