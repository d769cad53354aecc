"""The tracking store: the project's SQLite file by default, a server via ``MLFLOW_TRACKING_URI``.

The default store is ``mlflow.db`` in the project's root, found by :func:`project_root`:
a run started by ``dvc exp run --queue`` (or ``--temp``) executes in a temporary copy of the
repository under ``.dvc/tmp/exps/``, and its MLflow run must land in the project's store,
not in that throwaway copy.
"""
from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout this code runs from
DVC_ROOT_VARIABLE = "DVC_ROOT"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI)."""


def project_root() -> pathlib.Path:
    """The project this run belongs to: ``$DVC_ROOT`` when DVC runs the stage, else this checkout.

    DVC sets ``DVC_ROOT`` for every stage command; for queued and ``--temp`` experiments it
    points at the parent project rather than the executor's temporary copy (DVC 3:
    ``dvc/repo/experiments/queue/base.py``, "Override DVC_ROOT env var to point to the parent
    DVC repo"). Outside DVC (``python -m pipeline.train``) it is the checkout of this code.
    """
    root = os.environ.get(DVC_ROOT_VARIABLE)
    return pathlib.Path(root).resolve() if root else REPO_ROOT


def default_tracking_uri() -> str:
    """``sqlite:///<project root>/mlflow.db``: the store used when ``MLFLOW_TRACKING_URI`` is unset."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def configure_tracking(uri: str | None = None, timeout_s: int = 10) -> str:
    """Point MLflow at ``uri`` (else ``MLFLOW_TRACKING_URI``, else the project's SQLite store)
    and check that it answers, failing fast with a clear message if it does not.

    A tracking server that is down should stop a run before training, not after an hour.
    Returns the URI in use.
    """
    import mlflow

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("http"):
        # Don't let MLflow's HTTP client retry for minutes against a dead server.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # MLflow raises MlflowException, requests' errors, sqlalchemy's...
        raise TrackingError(
            f"MLflow tracking store {uri} is not usable ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300] if str(error) else ''}). Start the server "
            f"(`mlflow server --host 127.0.0.1 --port 5000`) or unset MLFLOW_TRACKING_URI to use "
            f"the local store {default_tracking_uri()}.") from None
    return uri
