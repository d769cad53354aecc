"""What the MLflow UI shows for this project's experiments, and the addresses of its pages.

Two experiment tags, both set by the train stage on every experiment it writes to:

* ``mlflow.experimentKind = custom_model_development``: MLflow's marker for a
  model-training experiment (as opposed to GenAI development). MLflow 3.17's own UI
  decides its navigation by the browser's "GenAI | Model training" switch instead
  (``?workflowType=machine_learning`` in a URL sets it; the default is GenAI, whose
  landing page is a traces overview), so the links below carry that parameter.
* ``mlflow.sharedViewState.key-metrics``: a saved runs-table view, the format the UI's
  own *Share* button writes: the key metrics as columns, best test accuracy first. The
  default table shows none of the 100-odd metrics and params; this view needs no
  hunting through the column picker. Open it with :func:`runs_table_url`.
"""
from __future__ import annotations

import json
import urllib.parse

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
WORKFLOW_QUERY = {"workflowType": "machine_learning"}  # the UI's "Model training" switch

SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the UI's share key tag (3.x)
KEY_METRICS_VIEW = "key-metrics"
# The figures to compare runs by: test accuracy (evaluate), validation accuracy of the
# exported weights, training time and throughput (train), inference throughput (evaluate).
KEY_METRICS = ("test_accuracy", "exported_val_accuracy", "train_time_s", "train_images_per_s", "test_images_per_s")


def column_key(kind: str, name: str) -> str:
    """A runs-table column as the UI names it: ``metrics.`test_accuracy```, ``attributes.`Models```."""
    return f"{kind}.`{name}`"


def key_metrics_view() -> str:
    """The saved view's JSON (stable bytes, so setting it again is recognisably a no-op)."""
    view = {"selectedColumns": [column_key("metrics", name) for name in KEY_METRICS]
            + [column_key("attributes", "Models")],
            "orderByKey": column_key("metrics", KEY_METRICS[0]), "orderByAsc": False}
    return json.dumps(view, sort_keys=True)


def experiment_tags() -> dict[str, str]:
    """The tags every training experiment should carry."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, SHARED_VIEW_TAG_PREFIX + KEY_METRICS_VIEW: key_metrics_view()}


def _page(base_url: str, route: str, **query: str) -> str:
    return f"{base_url.rstrip('/')}/#{route}?{urllib.parse.urlencode({**WORKFLOW_QUERY, **query})}"


def runs_table_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table with the key metrics, on the MLflow UI served at ``base_url``."""
    return _page(base_url, f"/experiments/{experiment_id}/runs", viewStateShareKey=KEY_METRICS_VIEW)


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page: its datasets, registered model, metrics, params, artifacts."""
    return _page(base_url, f"/experiments/{experiment_id}/runs/{run_id}")


def logged_model_url(base_url: str, experiment_id: str, model_id: str) -> str:
    """A LoggedModel's page: status, source run, data sets used, versions, metrics per data set."""
    return _page(base_url, f"/experiments/{experiment_id}/models/{model_id}")
