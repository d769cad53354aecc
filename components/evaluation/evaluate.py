"""Score one experiment's exported model on the test split, judge it, write and log the results.

:func:`evaluate_experiment` is the whole evaluate stage for one experiment:

1. check every input before heavy work: thresholds file, ``models/<exp>/model.keras``,
   the last accepted metrics, ``train_metrics.json`` and the MLflow run / model version
   it names, the prepared test split;
2. load the model (logits out, normalisation inside) and score every test image:
   accuracy, top-5, loss, per-class precision / recall / F1, confusion matrix, ECE;
3. time inference (images/s at ``batch_size``, median latency at batch 1), count
   parameters, measure the file's size;
4. decide the verdict (:mod:`components.evaluation.verdict`);
5. write, each atomically, where :mod:`components.experiments` puts them:
   ``metrics/<experiment>/test.json`` (DVC metrics), ``verdict.json`` beside it,
   ``plots/<experiment>/confusion.json`` (DVC confusion template rows), ``confusion.png``
   and ``worst.png``; on acceptance also ``metrics/<experiment>/accepted.json``, the next
   run's baseline (a rejected run leaves it alone, or writes a "nothing accepted yet"
   marker when there is none);
6. log test metrics and those files into the MLflow run that trained the model (the
   metrics also onto its LoggedModel, naming the test split they were computed on), and
   on acceptance move the registry alias ``champion`` to the model's version.

Why the baseline is a separate ``accepted.json``: DVC deletes a stage's outputs before
running it, so the previous ``test.json`` is gone by the time the stage starts, and a
rejected run must still write its metrics (DVC checks outputs exist). The accepted copy
is a ``persist: true`` output that only acceptance overwrites.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Mapping

import numpy as np

from components.evaluation import metrics as metric_fns
from components.evaluation import plots
from components.evaluation.config import EvaluateConfig
from components.evaluation.errors import EvaluationError
from components.evaluation.io import json_safe, read_json, write_json_atomic
from components.evaluation.timing import fill_batch, images_per_second, latency_ms
from components.evaluation.verdict import (
    ACCEPTED, baseline_record, decide, limits_for, load_baseline, load_thresholds, no_baseline_record,
)
from components.experiments import ExperimentPaths, ExperimentRef

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- inputs
def read_train_metrics(path: pathlib.Path, spec: ExperimentRef, log: Log = print) -> dict[str, Any]:
    """``models/<exp>/train_metrics.json`` as a dict; {} (with a warning) when absent.

    Evaluation needs it for the MLflow run id, LoggedModel id and registered model version,
    and repeats its training time, epochs and precision in the test metrics. A file that does not parse is an error naming it.
    """
    if not path.exists():
        log(f"warning: {path} not found; evaluating without MLflow run id or registered model version")
        return {}
    data = read_json(path, "the train stage's summary (mlflow_run_id, registered_model_version, ...)")
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, expected in (("dataset", spec.dataset), ("model", spec.model)):
        if key in data and data[key] != expected:
            raise EvaluationError(f"{path}: {key} is {data[key]!r} but {spec.section}.{spec.name}.{key} is "
                                  f"{expected!r}; the model is stale, retrain it (`dvc repro {spec.stage('train')}` or "
                                  f"`python -m pipeline.train --experiment {spec.name}`)")
    return data


def check_model_file(path: pathlib.Path, spec: ExperimentRef) -> None:
    """Fail with the command that produces ``models/<exp>/model.keras`` when it is missing."""
    if not path.is_file():
        raise EvaluationError(f"{path}: exported model not found for experiment '{spec.name}'; train it first with "
                              f"`dvc repro {spec.stage('train')}` or `python -m pipeline.train --experiment {spec.name}`")


def known_names() -> tuple[list[str], list[str]]:
    """The data set names and zoo model names thresholds may refer to."""
    from components.data.datasets import list_datasets
    from components.models import list_models

    return list_datasets(), list_models()


def load_model(path: pathlib.Path, info: Mapping[str, Any]):
    """Load the exported Keras model and check it fits the data set (input shape, logits per class)."""
    import keras

    import components.inputs  # noqa: F401  (registers the normalisation layers the model may contain)
    import components.models  # noqa: F401  (registers the zoo's custom layers)

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
        raise EvaluationError(f"{path}: cannot load the Keras model ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:300] if str(error) else ''})") from None
    expected_in, expected_out = tuple(info["image_shape"]), int(info["num_classes"])
    model_in = tuple(model.input_shape[1:])
    if len(model_in) != 3 or any(m is not None and m != e for m, e in zip(model_in, expected_in)):
        raise EvaluationError(f"{path}: model takes inputs of shape {model_in}, the data set's images are "
                              f"{expected_in}")
    if model.output_shape[-1] != expected_out:
        raise EvaluationError(f"{path}: model outputs {model.output_shape[-1]} logits, the data set has "
                              f"{expected_out} classes")
    return model


def make_predict(model) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a NumPy image batch to float32 logits, compiled once per batch shape.

    Images are passed as the data set stores them (uint8) unless the model declares a
    float input, in which case they are cast (values stay 0-255).
    """
    import keras

    if keras.backend.backend() == "jax":
        return _jax_predict(model)
    import tensorflow as tf

    input_dtype = tf.as_dtype(model.inputs[0].dtype)
    forward = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), reduce_retracing=True)

    def predict(batch: np.ndarray) -> np.ndarray:
        tensor = tf.convert_to_tensor(batch)
        if tensor.dtype != input_dtype:
            tensor = tf.cast(tensor, input_dtype)
        return forward(tensor).numpy()

    return predict


def _jax_predict(model) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`make_predict` on JAX: the model's stateless forward pass under ``jax.jit``, its
    variables passed in as arguments (not baked into the program as constants)."""
    import jax
    import jax.numpy as jnp

    input_dtype = model.inputs[0].dtype
    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, images):
        logits, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return logits.astype(jnp.float32)

    def predict(batch: np.ndarray) -> np.ndarray:
        # np.asarray waits for the result, so timing measures the work, not the dispatch
        return np.asarray(forward(trainable, non_trainable, jnp.asarray(batch, dtype=input_dtype)))

    return predict


def predict_all(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for every image, in order, ``batch_size`` at a time."""
    return np.concatenate([predict(images[start:start + batch_size])
                           for start in range(0, len(images), batch_size)])


# ----------------------------------------------------------------------------- records
def _round(value: Any, digits: int = 6) -> Any:
    """Floats rounded to ``digits`` decimals, recursively (stable, readable metrics files)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


#: The train stage's figures a test metrics file repeats (from ``train_metrics.json``), so that
#: one committed file shows what a model cost beside what it scores: training time in seconds,
#: epochs and the arithmetic it trained in. Not logged to MLflow as test metrics (the run has them).
TRAINING_KEYS = ("train_time_s", "train_epochs", "train_precision")


def metrics_record(spec: ExperimentRef, summary: Mapping[str, Any], speed: Mapping[str, float],
                   params: int, size_bytes: int, train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DVC metrics file's content: flat numbers first, the per-class table last.

    ``train``: the train stage's summary (``train_metrics.json``); its training time, epochs
    and precision are repeated under :data:`TRAINING_KEYS` (None where it lacks them)."""
    train = train or {}
    record = {"experiment": spec.name, "dataset": spec.dataset, "model": spec.model}
    for key in ("accuracy", "top5_accuracy", "top_k", "loss", "ece", "macro_precision", "macro_recall",
                "macro_f1", "examples"):
        record[key] = summary[key]
    record["images_per_s"] = round(float(speed["images_per_s"]), 1)  # at batch_size, after warm-up
    record["latency_ms"] = round(float(speed["latency_ms"]), 3)  # median at batch 1
    record["params"] = int(params)
    record["size_bytes"] = int(size_bytes)  # model.keras on disk
    record["train_time_s"] = train.get("train_time_s")
    record["train_epochs"] = train.get("epochs")
    record["train_precision"] = train.get("precision")
    record["per_class"] = summary["per_class"]
    return json_safe(_round(record))


# ----------------------------------------------------------------------------- the stage
def evaluate_experiment(spec: ExperimentRef, cfg: EvaluateConfig, experiments: Mapping[str, ExperimentRef], *,
                        root: str | os.PathLike = ".", tracking_uri: str | None = None,
                        log: Log = print) -> dict[str, Any]:
    """Evaluate experiment ``spec`` (one of ``experiments``, all those params.yaml lists) end to end.

    Its files are where ``spec.paths`` says (:mod:`components.experiments`); the thresholds
    file is ``cfg.thresholds_file`` under ``root`` (the repository root). ``tracking_uri`` overrides
    ``MLFLOW_TRACKING_URI`` / the local store for the MLflow steps. Returns
    ``{"metrics", "verdict", "paths", "logged", "promoted"}``; does not raise on a rejected
    verdict (the caller decides, see ``cfg.warn_only``). Raises EvaluationError (or
    TrackingError) on bad or missing input, naming the file.
    """
    root = pathlib.Path(root)
    paths = spec.paths

    # 1. Inputs, cheapest first, so a typo fails in seconds rather than after scoring.
    datasets, models = known_names()
    thresholds = load_thresholds(root / cfg.thresholds_file, experiments, datasets, models)
    limits = limits_for(thresholds, spec)
    check_model_file(paths.model, spec)
    baseline = load_baseline(paths.accepted, spec.name)
    train = read_train_metrics(paths.train_summary, spec, log)
    run_id = train.get("mlflow_run_id") or None
    model_id = train.get("mlflow_model_id") or None  # absent from models trained before LoggedModels
    model_name = train.get("registered_model_name") or spec.registered_model_name
    version = train.get("registered_model_version")
    version = None if version in (None, "") else str(version)
    if run_id:
        _check_tracking(tracking_uri, run_id, model_id, model_name, version, paths.train_summary)
    images, labels, info = _load_data(paths.data, cfg)
    label_names = [str(n) for n in info["label_names"]]

    # 2-3. Score and time.
    model = load_model(paths.model, info)
    predict = make_predict(model)
    log(f"scoring {len(labels)} test images of {spec.dataset} with {paths.model}")
    logits = predict_all(predict, images, cfg.batch_size)
    summary = metric_fns.summarize(logits, labels, label_names, cfg.ece_bins)
    speed = {"images_per_s": images_per_second(predict, fill_batch(images, cfg.batch_size),
                                               cfg.throughput_batches, cfg.warmup_runs),
             "latency_ms": latency_ms(predict, images[0], cfg.latency_runs, cfg.warmup_runs)}
    record = metrics_record(spec, summary, speed, model.count_params(), paths.model.stat().st_size, train)

    # 4. Verdict, on exactly the numbers written.
    verdict = decide(record, limits, baseline, str(paths.accepted) if baseline is not None else None)
    verdict = {"experiment": spec.name, **verdict,
               "registered_model": {"name": model_name, "version": version}, "mlflow_run_id": run_id}

    # 5. Files.
    _write_outputs(paths, spec, record, verdict, summary, logits, images, labels, label_names, cfg)
    if verdict["status"] == ACCEPTED:
        write_json_atomic(paths.accepted, baseline_record(record, mlflow_run_id=run_id,
                                                          registered_model_version=version))
    elif not paths.accepted.exists():  # DVC needs the declared output; a marker, not a baseline
        write_json_atomic(paths.accepted, no_baseline_record(spec.name, spec.dataset, spec.model))

    # 6. MLflow: results onto the training run and its LoggedModel, computed on the test
    # split; champion alias only on acceptance.
    from components.tracking.registry import log_evaluation, promote, test_split

    test_figures = {key: value for key, value in record.items() if key not in TRAINING_KEYS}
    logged = log_evaluation(run_id, test_figures, paths.evaluation_outputs(), model_id=model_id,
                            split=test_split(paths.data, spec.dataset) if run_id else None,
                            tags={"evaluation_status": verdict["status"],
                                  "evaluation_reasons": "; ".join(verdict["reasons"])[:4000]},
                            warn=log)
    promoted = False
    if verdict["status"] == ACCEPTED and run_id:
        promoted = promote(model_name, version, warn=log)
    elif verdict["status"] == ACCEPTED:
        log("warning: no MLflow run id; the 'champion' alias is not moved")
    return {"metrics": record, "verdict": verdict, "paths": paths, "logged": logged, "promoted": promoted}


def _load_data(data_dir: pathlib.Path, cfg: EvaluateConfig):
    from components.evaluation.data import load_split

    return load_split(data_dir, "test")


def _check_tracking(uri: str | None, run_id: str, model_id: str | None, model_name: str, version: str | None,
                    train_metrics: pathlib.Path) -> None:
    """Connect to the tracking store and check that the run, LoggedModel and model version
    ``train_metrics`` names exist (fail fast, before scoring)."""
    from components.tracking import configure_tracking
    from components.tracking.lookups import logged_model_exists, model_version_exists, run_exists

    used = configure_tracking(uri)
    if not run_exists(run_id):
        raise EvaluationError(f"{train_metrics}: mlflow_run_id {run_id!r} is not a run in the tracking store "
                              f"{used}; retrain, or point MLFLOW_TRACKING_URI at the store that trained "
                              f"this model")
    if model_id and not logged_model_exists(model_id):
        raise EvaluationError(f"{train_metrics}: mlflow_model_id {model_id!r} is not a LoggedModel in the tracking "
                              f"store {used}; retrain, or point MLFLOW_TRACKING_URI at the store that trained "
                              f"this model")
    if version is not None and not model_version_exists(model_name, version):
        raise EvaluationError(f"{train_metrics}: registered model {model_name!r} version {version!r} is not in "
                              f"the registry of {used}")


def _write_outputs(paths: ExperimentPaths, spec: ExperimentRef, record: Mapping[str, Any],
                   verdict: Mapping[str, Any], summary: Mapping[str, Any], logits: np.ndarray,
                   images: np.ndarray, labels: np.ndarray, label_names: list[str], cfg: EvaluateConfig) -> None:
    write_json_atomic(paths.test_metrics, record)
    write_json_atomic(paths.verdict, json_safe(verdict))
    predicted = metric_fns.predictions(logits)
    plots.write_confusion_rows(paths.confusion_json, plots.confusion_rows(labels, predicted, label_names))
    title = f"{spec.model} on {spec.dataset} ({spec.name}): accuracy {record['accuracy']:.2%}"
    plots.plot_confusion(np.asarray(summary["confusion_matrix"]), label_names, paths.confusion_png, title)
    probabilities = metric_fns.softmax(logits)
    worst = plots.worst_misclassified(probabilities, labels, cfg.num_worst)
    plots.plot_worst(images, labels, probabilities, worst, label_names, paths.worst_png,
                     f"{spec.name}: most confident mistakes ({len(worst)} shown)")
