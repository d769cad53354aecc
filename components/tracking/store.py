"""The tracking store: a local SQLite file by default, a server via ``MLFLOW_TRACKING_URI``."""
from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_TRACKING_URI = f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI)."""


def configure_tracking(uri: str | None = None, timeout_s: int = 10) -> str:
    """Point MLflow at ``uri`` (else ``MLFLOW_TRACKING_URI``, else the local SQLite store)
    and check that it answers, failing fast with a clear message if it does not.

    A tracking server that is down should stop a run before training, not after an hour.
    Returns the URI in use.
    """
    import mlflow

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
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
            f"the local store {DEFAULT_TRACKING_URI}.") from None
    return uri
