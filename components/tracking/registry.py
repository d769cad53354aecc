"""Evaluation results into MLflow: test metrics onto the training run and its LoggedModel,
the test split as the run's input, the files, and the ``champion`` alias.

Call :func:`components.tracking.configure_tracking` first; these functions use the
tracking URI it set. A missing run id or model version (tracking was off when the model
was trained, or registration failed) is not an error here: the step is skipped with a
printed warning, so evaluation still works without a tracking store.
"""
from __future__ import annotations

import math
import os
import pathlib
from typing import Callable, Iterable, Mapping

from components.tracking.datasets import TrackedSplit, log_splits, tracked_split
from components.tracking.lookups import CHAMPION, alias_version
from components.tracking.metrics import log_model_metrics

__all__ = ["ARTIFACT_DIR", "CHAMPION", "METRIC_PREFIX", "alias_version", "log_evaluation", "promote",
           "scalar_metrics", "test_split"]

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


def test_split(data_dir: str | os.PathLike, dataset: str) -> TrackedSplit:
    """The test split of ``dataset`` prepared in ``data_dir``, as evaluation metrics name it."""
    return tracked_split(data_dir, dataset, "test")


test_split.__test__ = False  # not a pytest test, despite its name


def log_evaluation(run_id: str | None, metrics: Mapping[str, object], artifact_paths: Iterable[str | os.PathLike],
                   *, model_id: str | None = None, split: TrackedSplit | None = None,
                   tags: Mapping[str, str] | None = None, artifact_dir: str = ARTIFACT_DIR,
                   warn: Callable[[str], None] = print) -> bool:
    """Log ``metrics`` (prefixed ``test_``), ``tags`` and the files ``artifact_paths`` into run ``run_id``.

    With ``model_id`` the metrics are also the LoggedModel's; with ``split`` (the test
    split, :func:`test_split`) they name the data set they were computed on, and the split
    becomes an input of the run with context ``test``. The run may be finished (the train
    stage ends it); MLflow accepts later metrics. Files go under ``<artifact_dir>/`` of the
    run's artifacts. Returns False (after a warning) when ``run_id`` is missing, True when
    logged. Errors of the store propagate.
    """
    if not run_id:
        warn("warning: no MLflow run id for this model (tracking off at training time?); "
             "evaluation results are not logged to MLflow")
        return False
    if not model_id:
        warn(f"warning: no MLflow LoggedModel id for this model (trained before models were logged as "
             f"LoggedModels?); test metrics go to run {run_id} only")
    from mlflow.entities import RunTag

    if split is not None:
        log_splits(run_id, [split])
    log_model_metrics(run_id, scalar_metrics(metrics), model_id=model_id or None, split=split)
    client = _client()
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
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
