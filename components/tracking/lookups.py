"""Read-only questions to the tracking store: does this run, model version or LoggedModel
exist, which version holds an alias, how long did a run take.

Kept apart from the modules that write (and import the data and training code), so the
report reaches MLflow through this small module alone. Call
:func:`components.tracking.configure_tracking` first. "Does not exist" is an answer
(False or None); any other error of the store propagates.
"""
from __future__ import annotations

from typing import Callable, TypeVar

CHAMPION = "champion"
T = TypeVar("T")


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _unless_missing(query: Callable[[], T]) -> T | None:
    """``query()``, or None when the store answers that the thing asked for does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return query()
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def run_exists(run_id: str) -> bool:
    """Whether run ``run_id`` is in the tracking store."""
    return _unless_missing(lambda: _client().get_run(run_id)) is not None


def model_version_exists(name: str, version: str | int) -> bool:
    """Whether registered model ``name`` has version ``version``."""
    return _unless_missing(lambda: _client().get_model_version(name, str(version))) is not None


def logged_model_exists(model_id: str) -> bool:
    """Whether LoggedModel ``model_id`` (``m-<hex>``) is in the tracking store."""
    return _unless_missing(lambda: _client().get_logged_model(model_id)) is not None


def alias_version(model_name: str, alias: str = CHAMPION) -> str | None:
    """The version ``alias`` of registered model ``model_name`` points to; None when the model or the alias does not exist."""
    # From the model's alias table: get_model_version_by_alias answers a missing alias with
    # INVALID_PARAMETER_VALUE, which cannot be told apart from a malformed request.
    model = _unless_missing(lambda: _client().get_registered_model(model_name))
    version = None if model is None else model.aliases.get(alias)
    return None if version is None else str(version)


def run_duration_s(run_id: str) -> float | None:
    """Wall time from start to end of run ``run_id`` in seconds; None when the run is missing or not ended."""
    run = _unless_missing(lambda: _client().get_run(run_id))
    if run is None or not run.info.end_time or not run.info.start_time:
        return None
    return (run.info.end_time - run.info.start_time) / 1000.0  # ms -> s
