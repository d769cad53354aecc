"""Metrics that belong to a model: on the run, and on its LoggedModel with the data set they were computed on."""
from __future__ import annotations

import time
from typing import Mapping

from components.tracking.datasets import TrackedSplit


def log_model_metrics(run_id: str, values: Mapping[str, float], *, model_id: str | None = None,
                      split: TrackedSplit | None = None, step: int = 0) -> None:
    """Log ``values`` into run ``run_id`` (finished or not) at ``step``, linked to LoggedModel
    ``model_id`` and to data set ``split`` when given.

    A metric with a model id is stored twice by MLflow: as a run metric (the runs table)
    and as a metric of the LoggedModel (its page, ``search_logged_models``), with the data
    set's name and digest beside it. The split should be an input of the run
    (:func:`components.tracking.datasets.log_splits`) so the UI can show it.
    """
    if not values:
        return
    import mlflow
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)  # ms since the epoch, as MLflow stores it
    dataset = {"dataset_name": split.name, "dataset_digest": split.digest} if split is not None else {}
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(key, float(value), timestamp, step, model_id=model_id,
                                                            **dataset) for key, value in values.items()])
