"""The MLflow edge (components/tracking) on a real temporary SQLite store, no MLflow mocked.

One module-scoped training record (a tiny Keras model logged the way the train stage logs
it, then evaluated the way the evaluate stage logs) backs most tests: the model is a
READY LoggedModel with signature and input example, registered from ``models:/<id>``;
train, validation and test are inputs with their contexts and digests; test metrics
belong to the model and name the test split; the experiment opens on the runs table.
"""
from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest

from components.data.info import INFO_FILE

DATASET = "tinyset"
EXPERIMENT = "tinyset-dense"  # the train stage's run name and registered model name
TEST_METRICS = {"accuracy": 0.625, "loss": 1.25, "images_per_s": 812.5, "per_class": {"a": {"f1": 0.5}}}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite tracking store, set as MLflow's tracking URI for the module."""
    import mlflow

    from components.tracking import configure_tracking

    previous = mlflow.get_tracking_uri()
    root = tmp_path_factory.mktemp("store")
    uri = configure_tracking(f"sqlite:///{root / 'mlflow.db'}")
    yield {"uri": uri, "root": root, "client": mlflow.MlflowClient(uri)}
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """A prepared directory as the tracking edge sees it: its info file (the digests' source)."""
    directory = tmp_path_factory.mktemp("data") / DATASET
    directory.mkdir()
    (directory / INFO_FILE).write_text(json.dumps({"name": DATASET, "splits": {"train": {"examples": 6}}}))
    return directory


def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1), dtype="uint8", name="image"), keras.layers.Rescaling(1 / 255),
                             keras.layers.Flatten(), keras.layers.Dense(3, name="logits")])


def staged_model_dir(directory: pathlib.Path) -> pathlib.Path:
    """What the trainer assembles before ``before_publish``: the model and its companion files."""
    directory.mkdir(parents=True)
    tiny_model().save(directory / "model.keras")
    (directory / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,1.0,0.5,1.1,0.4\n")
    (directory / "learning_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (directory / "model_summary.txt").write_text("Model: tiny\n")
    return directory


def trainer_metrics() -> dict:
    """The trainer's metrics as before_publish receives them (the MLflow ids still empty)."""
    return {"experiment": EXPERIMENT, "dataset": DATASET, "model": "dense", "epochs": 1,
            "best_val_accuracy": 0.4, "exported_weights": "ema",
            "export_candidates": {"ema": {"val_loss": 1.0, "val_accuracy": 0.45},
                                  "best_epoch": {"val_loss": 1.1, "val_accuracy": 0.4}},
            "weights_sha256": "ab" * 32, "train_time_s": 12.5, "images_per_s": 900.0,
            "mlflow_run_id": None, "registered_model_name": None, "registered_model_version": None}


@pytest.fixture(scope="module")
def recorded(store, data_dir, tmp_path_factory):
    """One training recorded by the train stage's edge, then evaluated by the evaluate stage's edge."""
    from components.tracking.registry import log_evaluation, test_split
    from components.tracking.runs import log_run_inputs, log_run_outputs, training_run

    staged = staged_model_dir(tmp_path_factory.mktemp("models") / f".{EXPERIMENT}.staged")
    with training_run(DATASET, EXPERIMENT) as run:
        log_run_inputs({"model": "dense", "recipe": {"epochs": 1}}, data_dir, DATASET, stage=f"train@{EXPERIMENT}")
        completed = log_run_outputs(staged, trainer_metrics(), EXPERIMENT, data_dir=data_dir)
    evaluation_file = tmp_path_factory.mktemp("eval") / "test.json"
    evaluation_file.write_text(json.dumps(TEST_METRICS))
    logged = log_evaluation(run.info.run_id, TEST_METRICS, [evaluation_file], model_id=completed["mlflow_model_id"],
                            split=test_split(data_dir, DATASET), tags={"evaluation_status": "accepted"},
                            warn=pytest.fail)
    assert logged
    return {"run_id": run.info.run_id, "metrics": completed, "model_id": completed["mlflow_model_id"],
            "staged": staged}


# ----------------------------------------------------------------------------- the LoggedModel
def test_the_model_is_a_ready_logged_model_of_the_run(store, recorded):
    import mlflow
    from mlflow.entities import LoggedModelStatus

    model = store["client"].get_logged_model(recorded["model_id"])
    assert model.model_id.startswith("m-") and model.status == LoggedModelStatus.READY
    assert model.source_run_id == recorded["run_id"] and model.name == EXPERIMENT and model.model_type == "keras"
    assert model.params["model"] == "dense" and model.params["recipe.epochs"] == "1"  # the run's config
    assert model.tags["weights_sha256"] == "ab" * 32 and model.tags["exported_weights"] == "ema"
    run = store["client"].get_run(recorded["run_id"])
    assert [o.model_id for o in run.outputs.model_outputs] == [recorded["model_id"]]  # the run's Models tab
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.model_id for m in found] == [recorded["model_id"]]  # no FAILED leftover from a workaround


def test_the_logged_model_has_signature_and_input_example_and_loads(recorded):
    import keras
    import mlflow

    uri = f"models:/{recorded['model_id']}"
    info = mlflow.models.get_model_info(uri)
    assert info.model_id == recorded["model_id"] and info.run_id == recorded["run_id"]
    inputs, outputs = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert inputs[0].type == np.dtype("uint8") and inputs[0].shape == (-1, 8, 8, 1)
    assert outputs[0].shape == (-1, 3)
    assert info.saved_input_example_info["artifact_path"] == "input_example.json"
    assert set(info.flavors) == {"keras", "python_function"}
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    loaded = mlflow.pyfunc.load_model(uri).predict(images)
    expected = keras.ops.convert_to_numpy(keras.saving.load_model(recorded["staged"] / "model.keras")(images))
    np.testing.assert_allclose(loaded, expected, rtol=1e-6)


def test_the_registered_version_is_the_logged_model(store, recorded):
    metrics = recorded["metrics"]
    version = store["client"].get_model_version(EXPERIMENT, metrics["registered_model_version"])
    assert version.source == f"models:/{recorded['model_id']}" and version.run_id == recorded["run_id"]


def test_train_metrics_record_the_model_id_beside_the_run_id(store, recorded, tmp_path):
    from components.training.trainer import metrics_json

    metrics = recorded["metrics"]
    keys = list(metrics)
    assert keys[keys.index("mlflow_run_id") + 1] == "mlflow_model_id"
    assert metrics["registered_model_name"] == EXPERIMENT and metrics["registered_model_version"] == "1"
    logged = store["client"].download_artifacts(recorded["run_id"], "train_metrics.json", str(tmp_path))
    assert pathlib.Path(logged).read_bytes() == metrics_json(metrics)


def test_with_tracking_ids_keeps_order_and_appends_what_is_missing():
    from components.tracking.runs import with_tracking_ids

    filled = with_tracking_ids({"a": 1, "mlflow_run_id": None, "registered_model_name": None, "z": 2}, "r", "m-1",
                               "name", "3")
    assert list(filled.items()) == [("a", 1), ("mlflow_run_id", "r"), ("mlflow_model_id", "m-1"),
                                    ("registered_model_name", "name"), ("z", 2), ("registered_model_version", "3")]


# ----------------------------------------------------------------------------- inputs and metrics
def test_train_validation_and_test_are_inputs_with_contexts_and_digests(store, data_dir, recorded):
    from components.tracking.datasets import split_digest

    run = store["client"].get_run(recorded["run_id"])
    inputs = {(i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"], i.dataset.digest)
              for i in run.inputs.dataset_inputs}
    assert inputs == {(f"{DATASET}-train", "training", split_digest(data_dir, "train")),
                      (f"{DATASET}-validation", "validation", split_digest(data_dir, "validation")),
                      (f"{DATASET}-test", "test", split_digest(data_dir, "test"))}
    assert len({digest for *_, digest in inputs}) == 3


def test_test_metrics_belong_to_the_model_and_name_the_test_split(store, data_dir, recorded):
    from components.tracking.datasets import split_digest

    model = store["client"].get_logged_model(recorded["model_id"])
    by_key = {m.key: m for m in model.metrics}
    assert by_key["test_accuracy"].value == pytest.approx(0.625)
    for key in ("test_accuracy", "test_loss", "test_images_per_s"):
        metric = by_key[key]
        assert metric.model_id == recorded["model_id"] and metric.run_id == recorded["run_id"]
        assert (metric.dataset_name, metric.dataset_digest) == (f"{DATASET}-test", split_digest(data_dir, "test"))
    # The exported weights' validation accuracy (the EMA candidate here), on the validation split.
    assert by_key["exported_val_accuracy"].value == pytest.approx(0.45)
    assert by_key["exported_val_accuracy"].dataset_name == f"{DATASET}-validation"
    assert by_key["train_time_s"].value == 12.5 and by_key["train_time_s"].dataset_name is None
    # The same figures at run level, the runs table's columns.
    run_metrics = store["client"].get_run(recorded["run_id"]).data.metrics
    assert {"test_accuracy", "exported_val_accuracy", "train_time_s", "train_images_per_s",
            "test_images_per_s"} <= set(run_metrics)
    assert "test_per_class" not in run_metrics  # nested figures stay in the files


def test_search_logged_models_by_test_accuracy_on_the_test_split(store, recorded):
    import mlflow

    experiment = store["client"].get_experiment_by_name(DATASET)
    found = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id],
                                        filter_string="metrics.test_accuracy > 0.6",
                                        datasets=[{"dataset_name": f"{DATASET}-test"}], output_format="list")
    assert [m.model_id for m in found] == [recorded["model_id"]]


def test_split_digests_follow_the_info_file(tmp_path):
    from components.tracking.datasets import split_digest

    (tmp_path / INFO_FILE).write_text("{}")
    before = {split: split_digest(tmp_path, split) for split in ("train", "validation", "test")}
    assert len(set(before.values())) == 3
    (tmp_path / INFO_FILE).write_text('{"prepared": "again"}')
    assert all(split_digest(tmp_path, split) != digest for split, digest in before.items())
    with pytest.raises(ValueError, match="split 'dev': expected one of"):
        split_digest(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere' / INFO_FILE}: not found"):
        split_digest(tmp_path / "nowhere", "test")


# ----------------------------------------------------------------------------- experiments
def test_experiments_are_marked_for_model_training_with_the_key_metrics_view(store, recorded):
    from components.tracking.views import KEY_METRICS, key_metrics_view

    tags = store["client"].get_experiment_by_name(DATASET).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.key-metrics"])
    assert view["selectedColumns"][:len(KEY_METRICS)] == [f"metrics.`{name}`" for name in KEY_METRICS]
    assert view["orderByKey"] == "metrics.`test_accuracy`" and view["orderByAsc"] is False
    assert tags["mlflow.sharedViewState.key-metrics"] == key_metrics_view()
    # Every key metric is one the two stages log at run level.
    assert set(KEY_METRICS) <= set(store["client"].get_run(recorded["run_id"]).data.metrics)


def test_an_existing_experiment_is_tagged_once(store):
    from components.tracking.runs import ensure_experiment
    from components.tracking.views import experiment_tags

    older = store["client"].create_experiment("made-before-the-tags")
    assert "mlflow.experimentKind" not in store["client"].get_experiment(older).tags
    assert ensure_experiment("made-before-the-tags") == older
    tags = store["client"].get_experiment(older).tags
    assert {k: tags[k] for k in experiment_tags()} == experiment_tags()
    assert ensure_experiment("made-before-the-tags") == older  # again: nothing changes
    assert store["client"].get_experiment(older).tags == tags


def test_ui_links_open_the_model_training_pages():
    from components.tracking import views

    assert views.runs_table_url("http://127.0.0.1:5000/", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=key-metrics"
    assert views.logged_model_url("http://h:1", "3", "m-1") == \
        "http://h:1/#/experiments/3/models/m-1?workflowType=machine_learning"
    assert views.run_url("http://h:1", "3", "r") == "http://h:1/#/experiments/3/runs/r?workflowType=machine_learning"


# ----------------------------------------------------------------------------- lookups
def test_lookups_answer_missing_without_raising(store, recorded):
    from components.tracking import lookups

    assert lookups.run_exists(recorded["run_id"]) and not lookups.run_exists("0" * 32)
    assert lookups.logged_model_exists(recorded["model_id"]) and not lookups.logged_model_exists("m-" + "0" * 32)
    assert lookups.model_version_exists(EXPERIMENT, "1") and not lookups.model_version_exists(EXPERIMENT, "99")
    assert not lookups.model_version_exists("no-such-model", "1")
    assert lookups.alias_version(EXPERIMENT) is None and lookups.alias_version("no-such-model") is None
    assert lookups.run_duration_s(recorded["run_id"]) > 0 and lookups.run_duration_s("0" * 32) is None


def test_the_report_notes_an_unusable_store_and_lets_other_errors_through(tmp_path):
    import mlflow

    from components.evaluation.report import Row, add_mlflow

    previous = mlflow.get_tracking_uri()
    notes: list[str] = []
    try:
        # A SQLite file under a regular file: the store cannot be opened.
        (tmp_path / "a-file").write_text("")
        assert not add_mlflow([], f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", log=notes.append)
        assert len(notes) == 1 and notes[0].startswith("note: MLflow not used for the report (MLflow tracking store")
        # A row the store does not know: its figure stays empty, the store is still used.
        row = Row("e", "d", "m", 0.5, mlflow_run_id="0" * 32, registered_model_name="e", registered_model_version="1")
        assert add_mlflow([row], f"sqlite:///{tmp_path / 'mlflow.db'}", log=notes.append)
        assert row.train_time_s is None and row.champion is False and len(notes) == 1
        # A bug is not a note.
        with pytest.raises(AttributeError):
            add_mlflow([object()], f"sqlite:///{tmp_path / 'mlflow.db'}", log=notes.append)
    finally:
        mlflow.set_tracking_uri(previous)


# ----------------------------------------------------------------------------- MLflow itself
def test_mlflow_keras_log_model_with_an_input_example_still_fails(store):
    """https://github.com/mlflow/mlflow/issues/16183: ``mlflow.keras.log_model`` writes the input
    example before creating its directory. If this starts to pass, MLflow is fixed: use
    ``mlflow.keras.log_model`` in components/tracking/logged_model.py and drop the workaround."""
    import mlflow

    from components.tracking.logged_model import signature_and_example

    model = tiny_model()
    signature, example = signature_and_example(model)
    mlflow.set_experiment("upstream-16183")
    with mlflow.start_run():
        with pytest.raises(FileNotFoundError, match="input_example.json"):
            mlflow.keras.log_model(model, name="model", signature=signature, input_example=example)


def test_an_unchecked_mlflow_version_stops_before_training(monkeypatch):
    from components.compat import CompatError
    from components.tracking import logged_model

    logged_model.check_mlflow_version()  # the installed version is a checked one
    monkeypatch.setattr(logged_model, "MLFLOW_CHECKED", ((2, 0), (2, 22)))
    with pytest.raises(CompatError, match=r"outside the versions .* \(2\.0 to 2\.22\); run tests/test_tracking.py"):
        logged_model.check_mlflow_version()


def test_gpu_system_metrics_are_available_and_quiet_without_a_gpu(caplog):
    """nvidia-ml-py is installed, so MLflow samples NVIDIA GPUs when there is one; without
    one, starting the system metrics monitor warns about nothing."""
    import pynvml
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    try:
        pynvml.nvmlInit()
        gpus = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        gpus = 0
    with caplog.at_level(logging.INFO, logger="mlflow"):
        monitors = [type(m).__name__ for m in SystemMetricsMonitor("0" * 32).monitors]
    assert ("GPUMonitor" in monitors) == (gpus > 0), monitors
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
