"""Evaluation results into MLflow: test metrics and files onto the training run, and the ``champion`` alias.

Call :func:`components.tracking.configure_tracking` first; these functions use the
tracking URI it set. A missing run id or model version (tracking was off when the model
was trained, or registration failed) is not an error here: the step is skipped with a
printed warning, so evaluation still works without a tracking store.
"""
from __future__ import annotations

import math
import os
import pathlib
import time
from typing import Callable, Iterable, Mapping

CHAMPION = "champion"
ARTIFACT_DIR = "evaluation"  # folder of the run's artifacts that holds the evaluation files
METRIC_PREFIX = "test_"


def _client():
    import mlflow

    return mlflow.MlflowClient()


def scalar_metrics(metrics: Mapping[str, object], prefix: str = METRIC_PREFIX) -> dict[str, float]:
    """The finite top-level numbers of ``metrics`` under ``prefix`` (nested dicts and strings left out)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def log_evaluation(run_id: str | None, metrics: Mapping[str, object], artifact_paths: Iterable[str | os.PathLike],
                   *, tags: Mapping[str, str] | None = None, artifact_dir: str = ARTIFACT_DIR,
                   warn: Callable[[str], None] = print) -> bool:
    """Log ``metrics`` (prefixed ``test_``), ``tags`` and the files ``artifact_paths`` into run ``run_id``.

    The run may be finished (the train stage ends it); MLflow accepts later metrics.
    Files go under ``<artifact_dir>/`` of the run's artifacts. Returns False (after a
    warning) when ``run_id`` is missing, True when logged. Errors of the store propagate.
    """
    if not run_id:
        warn("warning: no MLflow run id for this model (tracking off at training time?); "
             "evaluation results are not logged to MLflow")
        return False
    from mlflow.entities import Metric, RunTag

    client = _client()
    timestamp = int(time.time() * 1000)  # ms since the epoch, as MLflow stores it
    client.log_batch(run_id,
                     metrics=[Metric(k, v, timestamp, 0) for k, v in scalar_metrics(metrics).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
    for path in artifact_paths:
        path = pathlib.Path(path)
        if path.exists():
            client.log_artifact(run_id, str(path), artifact_dir)
        else:
            warn(f"warning: {path} does not exist; not logged to MLflow run {run_id}")
    return True


def promote(model_name: str | None, version: str | int | None, alias: str = CHAMPION,
            *, warn: Callable[[str], None] = print) -> bool:
    """Point registry alias ``alias`` of ``model_name`` at ``version`` (moving it from any other version).

    Returns False (after a warning) when the name or version is missing, True when set.
    """
    if not model_name or version is None or str(version).strip() in ("", "None"):
        warn(f"warning: no registered model version for {model_name or 'this model'} (registration failed "
             f"or tracking was off at training time); the '{alias}' alias is not moved")
        return False
    _client().set_registered_model_alias(model_name, alias, str(version))
    return True


def alias_version(model_name: str, alias: str = CHAMPION) -> str | None:
    """The version ``alias`` points to, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def check_run(run_id: str) -> None:
    """Raise MlflowException if run ``run_id`` is not in the tracking store (checked before evaluating)."""
    _client().get_run(run_id)
