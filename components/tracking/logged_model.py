"""The trained Keras model as an MLflow 3 LoggedModel: its own id, status, artifacts and metrics.

MLflow 3 records a model as an entity of its own (``m-<hex>``), linked to the run that
produced it (the run's *Models* tab, ``mlflow.search_logged_models``), carrying the
metrics computed on it (each naming the data set it was computed on) and registered from
``models:/<model_id>``. :func:`log_keras_model` is this project's ``mlflow.keras.log_model``.

**The MLflow workaround (the only one in this project; the Keras ones are in
components/compat.py).** ``mlflow.keras.log_model(..., input_example=...)`` fails in MLflow
3.0 to at least 3.17.2: ``mlflow.keras.save_model`` writes ``input_example.json`` into the
model directory before it creates that directory (it only exists once ``data/`` is made),
and ``log_model`` hands it a directory that does not exist yet, so the call raises
FileNotFoundError and leaves a FAILED LoggedModel behind
(https://github.com/mlflow/mlflow/issues/16183, open). ``save_model`` into a directory that
exists works, so :func:`log_keras_model` does by hand what ``Model.log`` does: create the
LoggedModel (PENDING), link it to the run as an output, save into an existing directory,
upload the files into the LoggedModel and finalize it READY (FAILED if anything raises).
``tests/test_tracking.py::test_mlflow_keras_log_model_with_an_input_example_still_fails``
fails once MLflow is fixed: then call ``mlflow.keras.log_model(..., name=..., model_id=...)``
instead and delete the workaround. Outside :data:`MLFLOW_CHECKED` :func:`check_mlflow_version`
raises, so an MLflow upgrade is a decision, not a surprise.
"""
from __future__ import annotations

import pathlib
import tempfile
from typing import Any, Mapping

from components.compat import CompatError

# MLflow versions the workaround was checked against (mlflow.keras.save / models.model.Model.log).
MLFLOW_CHECKED = ((3, 0), (3, 17))
UPSTREAM_ISSUE = "https://github.com/mlflow/mlflow/issues/16183"
EXAMPLE_ROWS = 2  # images in the logged input example (zeros; only the shape and dtype matter)


def mlflow_version() -> tuple[int, int]:
    """(major, minor) of the installed MLflow."""
    import mlflow

    major, minor = mlflow.__version__.split(".")[:2]
    return int(major), int(minor)


def check_mlflow_version() -> None:
    """Raise CompatError when the installed MLflow is outside the versions the workaround was checked on.

    Called when a training run starts, so an unchecked MLflow stops the stage before an
    hour of training rather than at the end.
    """
    low, high = MLFLOW_CHECKED
    version = mlflow_version()
    if not low <= version <= high:
        raise CompatError(f"mlflow {'.'.join(map(str, version))} is outside the versions the model-logging "
                          f"workaround in {__name__} was checked against ({low[0]}.{low[1]} to {high[0]}.{high[1]}); "
                          f"run tests/test_tracking.py, then widen MLFLOW_CHECKED or, if {UPSTREAM_ISSUE} is "
                          f"fixed, use mlflow.keras.log_model")


def signature_and_example(model) -> tuple[Any, Any]:
    """The model's MLflow signature and an input example: raw uint8 images in, logits out.

    The exported models take the data set's uint8 images (normalisation is their first
    layer), so the example is uint8 whatever the input layer's dtype; the batch dimension
    becomes -1 in the signature.
    """
    import keras
    import numpy as np
    from mlflow.models import infer_signature

    example = np.zeros((EXAMPLE_ROWS, *model.input_shape[1:]), np.uint8)
    return infer_signature(example, keras.ops.convert_to_numpy(model(example))), example


def model_requirements() -> list[str]:
    """The pip requirements of a served model: Keras and its backend, pinned to the versions
    that trained it (MLflow adds itself).

    Given explicitly because MLflow's default, inferring them by loading the model in a
    subprocess, costs about 10 s per logged model (10.8 s and 9.8 s against 0.0 s, saving a
    tiny model here) and adds only a pin of numpy, which keras requires anyway (unpinned).
    """
    from importlib.metadata import version

    import keras

    backend = keras.backend.backend()
    return [f"keras=={version('keras')}", f"{backend}=={version(backend)}"]


def log_keras_model(model, name: str, run_id: str, *, params: Mapping[str, str] | None = None,
                    tags: Mapping[str, str] | None = None, step: int = 0):
    """Log Keras ``model`` as a READY LoggedModel named ``name``, an output of run ``run_id`` at ``step``.

    The MLflow model format (the ``keras`` and ``python_function`` flavors) with signature
    and input example, ``params`` and ``tags`` on the LoggedModel. Returns the
    ``mlflow.entities.LoggedModel`` (``model_id``, ``model_uri``); on error the LoggedModel
    is left FAILED and the error propagates. This is the workaround for
    ``mlflow.keras.log_model`` described in the module docstring (issue 16183).
    """
    import mlflow
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    check_mlflow_version()
    client = mlflow.MlflowClient()
    logged = mlflow.initialize_logged_model(name=name, source_run_id=run_id, model_type="keras",
                                            params={k: str(v) for k, v in (params or {}).items()},
                                            tags={k: str(v) for k, v in (tags or {}).items()})
    try:
        # As Model.log: the run lists the model among its outputs (its Models tab).
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
        signature, example = signature_and_example(model)
        # The MLmodel file names the LoggedModel and the run, as Model.log writes it.
        description = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                            model_id=logged.model_id)
        with tempfile.TemporaryDirectory() as scratch:
            local = pathlib.Path(scratch) / "model"
            local.mkdir()  # issue 16183: save_model writes the input example before creating the directory
            mlflow.keras.save_model(model, str(local), mlflow_model=description, signature=signature,
                                    input_example=example, pip_requirements=model_requirements())
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
