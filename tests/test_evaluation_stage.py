"""The evaluate stage end to end: a real tiny Keras model, real prepared data, a real MLflow store.

One module-scoped set of fixtures (prepared synthetic CIFAR-10, a trained one-layer
model, an MLflow SQLite store) keeps the whole file to a few seconds after TensorFlow loads.
Each test gets its own repository directory (``repo``) holding params.yaml,
thresholds.yaml, models/<exp>/ and a link to the prepared data.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from components.config import ConfigError
from components.evaluation import EvaluateConfig, EvaluationError
from components.evaluation.evaluate import evaluate_experiment
from components.experiments import catalogue

EXPERIMENT = "cifar_tiny"
SPEC_YAML = f"experiments:\n  {EXPERIMENT}: {{dataset: cifar10, model: lenet5, recipe: fast}}\n"
FAST = dict(batch_size=64, throughput_batches=2, latency_runs=3, warmup_runs=1, num_worst=9)
MODEL_NAME = EXPERIMENT  # registered under the experiment's name


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Synthetic CIFAR-10 in the prepare stage's format: 180 train, 20 validation, 100 test images."""
    from tests.conftest import prepare_synthetic

    return prepare_synthetic(tmp_path_factory.mktemp("prepared") / "out", 200, 100,
                             {"train": 2, "validation": 1, "test": 1})


@pytest.fixture(scope="module")
def model_file(prepared, tmp_path_factory):
    """A one-layer model on raw uint8 images (rescaling inside, logits out), briefly trained."""
    import keras

    from components.evaluation.data import load_split

    keras.utils.set_random_seed(0)
    images, labels, _ = load_split(prepared, "train")
    model = keras.Sequential([keras.Input((32, 32, 3), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(10, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, epochs=2, batch_size=32, verbose=0)  # ~80%: some mistakes to show
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A real MLflow SQLite store with an experiment whose artifacts stay in the temporary directory."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("tests", artifact_location=(tmp / "artifacts").as_uri())
    yield {"uri": uri, "client": client, "experiment_id": experiment_id}
    mlflow.set_tracking_uri(previous)


def train_run(tracking, model_file: pathlib.Path, name: str = MODEL_NAME) -> tuple[str, str]:
    """What the train stage does in MLflow: a finished run with the model logged, registered as a version."""
    client = tracking["client"]
    run = client.create_run(tracking["experiment_id"])
    client.log_artifact(run.info.run_id, str(model_file), "model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # already registered by an earlier test in this module
        pass
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return run.info.run_id, str(version.version)


@pytest.fixture
def repo(tmp_path, prepared, model_file):
    """A repository directory for one test: params, thresholds, the model, a link to the data."""
    root = tmp_path / "repo"
    (root / "data" / "tfrecords").mkdir(parents=True)
    (root / "data" / "tfrecords" / "cifar10").symlink_to(prepared, target_is_directory=True)
    (root / "models" / EXPERIMENT).mkdir(parents=True)
    shutil.copy(model_file, root / "models" / EXPERIMENT / "model.keras")
    (root / "params.yaml").write_text(SPEC_YAML)
    set_thresholds(root, min_accuracy=0.0)
    return root


def set_thresholds(root: pathlib.Path, min_accuracy: float, max_drop: float = 0.01) -> None:
    (root / "thresholds.yaml").write_text(
        f"version: 1\ndefaults: {{max_drop: {max_drop}}}\nmin_accuracy:\n  cifar10: {{lenet5: {min_accuracy}}}\n")


def write_train_metrics(root: pathlib.Path, run_id: str | None, version: str | None,
                        model_id: str | None = None) -> None:
    (root / "models" / EXPERIMENT / "train_metrics.json").write_text(json.dumps({
        "experiment": EXPERIMENT, "dataset": "cifar10", "model": "lenet5", "mlflow_run_id": run_id,
        "mlflow_model_id": model_id, "registered_model_name": MODEL_NAME, "registered_model_version": version, "epochs": 8,
        "train_time_s": 1.5, "images_per_s": 1000.0, "precision": "mixed_bfloat16"}))


def run_stage(root: pathlib.Path, tracking_uri: str | None = None, **config):
    specs = catalogue({"experiments": {EXPERIMENT: {"dataset": "cifar10", "model": "lenet5"}}}, root=root)
    return evaluate_experiment(specs[EXPERIMENT], EvaluateConfig(**{**FAST, **config}), specs, root=root,
                               tracking_uri=tracking_uri, log=lambda *_: None)


def champion(tracking) -> str | None:
    from components.tracking.registry import alias_version

    return alias_version(MODEL_NAME)


# ----------------------------------------------------------------------------- end to end
def test_evaluate_writes_every_output_logs_to_mlflow_and_promotes(repo, tracking, model_file, prepared):
    from PIL import Image

    run_id, version = train_run(tracking, model_file)
    # The train stage's LoggedModel of that run (its files do not matter here).
    model_id = tracking["client"].create_logged_model(tracking["experiment_id"], source_run_id=run_id).model_id
    write_train_metrics(repo, run_id, version, model_id)
    result = run_stage(repo, tracking["uri"])
    paths = result["paths"]
    assert paths.test_metrics == repo / "metrics" / EXPERIMENT / "test.json"

    metrics = json.loads(paths.test_metrics.read_text())
    assert {"experiment", "accuracy", "top5_accuracy", "loss", "ece", "macro_precision", "macro_recall", "macro_f1",
            "images_per_s", "latency_ms", "params", "size_bytes", "per_class"} <= set(metrics)
    assert metrics["experiment"] == EXPERIMENT and metrics["examples"] == 100
    assert metrics["params"] == 32 * 32 * 3 * 10 + 10  # one Dense layer
    assert metrics["size_bytes"] == (repo / "models" / EXPERIMENT / "model.keras").stat().st_size
    assert metrics["images_per_s"] > 0 and metrics["latency_ms"] > 0
    # what the model cost, from the train stage's summary, beside what it scores (issue 14)
    assert (metrics["train_time_s"], metrics["train_epochs"], metrics["train_precision"]) == (1.5, 8, "mixed_bfloat16")
    assert 0.3 < metrics["accuracy"] <= 1.0  # trained on learnable synthetic classes; chance is 0.1
    assert sorted(metrics["per_class"]) == sorted(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                   "horse", "ship", "truck"])

    # The accuracy agrees with Keras' own predict on the same images.
    import keras

    from components.evaluation.data import load_split

    images, labels, _ = load_split(prepared, "test")
    keras_predictions = keras.models.load_model(model_file).predict(images, verbose=0).argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(keras_predictions == labels)))

    # DVC confusion-template rows: one per test image, consistent with the accuracy.
    rows = json.loads(paths.confusion_json.read_text())
    assert len(rows) == 100 and set(rows[0]) == {"actual", "predicted"}
    assert sum(r["actual"] == r["predicted"] for r in rows) / 100 == pytest.approx(metrics["accuracy"])
    for png in (paths.confusion_png, paths.worst_png):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 200
    assert not list(repo.rglob("*.tmp*"))  # atomic writes leave no temporary files

    verdict = json.loads(paths.verdict.read_text())
    assert verdict["status"] == "accepted" and verdict["baseline"] is None
    assert verdict["registered_model"] == {"name": MODEL_NAME, "version": version}
    assert json.loads(paths.accepted.read_text())["accuracy"] == metrics["accuracy"]

    # MLflow: test metrics and files on the training run, champion alias on the version.
    assert result["logged"] and result["promoted"] and champion(tracking) == version
    run = tracking["client"].get_run(run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert "test_train_time_s" not in run.data.metrics  # the run has its own training time
    assert run.data.tags["evaluation_status"] == "accepted"
    logged = {pathlib.PurePosixPath(a.path).name for a in tracking["client"].list_artifacts(run_id, "evaluation")}
    assert logged == {"test.json", "verdict.json", "confusion.json", "confusion.png", "worst.png"}
    # The test metrics are the LoggedModel's too, computed on the test split, an input of the run.
    model_metrics = {m.key: m for m in tracking["client"].get_logged_model(model_id).metrics}
    assert model_metrics["test_accuracy"].value == pytest.approx(metrics["accuracy"])
    assert model_metrics["test_accuracy"].dataset_name == "cifar10-test"
    (test_input,) = run.inputs.dataset_inputs
    assert test_input.dataset.name == "cifar10-test" and test_input.dataset.digest == \
        model_metrics["test_accuracy"].dataset_digest
    assert {t.key: t.value for t in test_input.tags}["mlflow.data.context"] == "test"


def test_alias_moves_only_on_acceptance(repo, tracking, model_file, capsys, monkeypatch):
    """Accepted v_a holds champion; a rejected later version leaves it, and leaves the baseline, alone."""
    from pipeline.evaluate import main

    monkeypatch.chdir(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking["uri"])
    run_a, version_a = train_run(tracking, model_file)
    write_train_metrics(repo, run_a, version_a)
    assert main(["--experiment", EXPERIMENT]) == 0
    assert champion(tracking) == version_a
    accepted = repo / "metrics" / EXPERIMENT / "accepted.json"
    accepted_before = accepted.read_text()

    # The same model again, but the floor is now above its accuracy: rejected, exit 1.
    run_b, version_b = train_run(tracking, model_file)
    write_train_metrics(repo, run_b, version_b)
    set_thresholds(repo, min_accuracy=0.999)
    capsys.readouterr()
    assert main(["--experiment", EXPERIMENT]) == 1
    err = capsys.readouterr().err
    assert f"evaluation of '{EXPERIMENT}' rejected" in err and "is below the minimum 0.9990" in err
    assert champion(tracking) == version_a  # not moved
    assert accepted.read_text() == accepted_before  # baseline untouched
    verdict = json.loads((repo / "metrics" / EXPERIMENT / "verdict.json").read_text())
    assert verdict["status"] == "rejected" and verdict["registered_model"]["version"] == version_b
    assert tracking["client"].get_run(run_b).data.tags["evaluation_status"] == "rejected"

    # warn_only: same rejection, exit 0 with a warning; the verdict still says rejected.
    (repo / "params.yaml").write_text(SPEC_YAML + "evaluate: {warn_only: true, latency_runs: 2, "
                                                  "throughput_batches: 1, batch_size: 64}\n")
    assert main(["--experiment", EXPERIMENT]) == 0
    assert "warning (evaluate.warn_only is true" in capsys.readouterr().err
    assert json.loads((repo / "metrics" / EXPERIMENT / "verdict.json").read_text())["status"] == "rejected"
    assert champion(tracking) == version_a


def test_a_rejected_first_run_leaves_a_nothing_accepted_marker(repo):
    set_thresholds(repo, min_accuracy=0.999)
    first = run_stage(repo, warn_only=True)
    assert first["verdict"]["status"] == "rejected"
    accepted = repo / "metrics" / EXPERIMENT / "accepted.json"
    assert json.loads(accepted.read_text())["accepted"] is False  # DVC's declared output exists
    set_thresholds(repo, min_accuracy=0.0)
    second = run_stage(repo)  # the marker is no baseline: only the floor applies
    assert second["verdict"]["status"] == "accepted" and second["verdict"]["baseline"] is None
    assert json.loads(accepted.read_text())["accepted"] is True


def test_regression_against_the_last_accepted_metrics(repo):
    first = run_stage(repo)  # no train_metrics.json: no MLflow, a warning only
    assert first["verdict"]["status"] == "accepted" and not first["logged"] and not first["promoted"]
    accepted = repo / "metrics" / EXPERIMENT / "accepted.json"
    baseline = json.loads(accepted.read_text())
    baseline["accuracy"] = round(first["metrics"]["accuracy"] + 0.05, 6)  # pretend the last accepted was better
    accepted.write_text(json.dumps(baseline))

    second = run_stage(repo)
    assert second["verdict"]["status"] == "rejected"
    assert "dropped 0.0500 from the last accepted" in second["verdict"]["reasons"][0]
    assert second["verdict"]["baseline"]["path"] == str(accepted)
    assert json.loads(accepted.read_text())["accuracy"] == baseline["accuracy"]  # not overwritten on rejection

    set_thresholds(repo, min_accuracy=0.0, max_drop=0.1)  # a looser max_drop accepts it and moves the baseline
    third = run_stage(repo)
    assert third["verdict"]["status"] == "accepted"
    assert json.loads(accepted.read_text())["accuracy"] == third["metrics"]["accuracy"]


# ----------------------------------------------------------------------------- bad input
def test_missing_model_names_the_path_and_the_command(repo):
    os.remove(repo / "models" / EXPERIMENT / "model.keras")
    with pytest.raises(EvaluationError, match="exported model not found") as error:
        run_stage(repo)
    message = str(error.value)
    assert str(repo / "models" / EXPERIMENT / "model.keras") in message
    assert "dvc repro" in message and f"python -m pipeline.train --experiment {EXPERIMENT}" in message


def test_missing_data_names_the_directory_and_the_command(repo):
    (repo / "data" / "tfrecords" / "cifar10").unlink()
    with pytest.raises(EvaluationError, match="prepared data directory not found") as error:
        run_stage(repo)
    assert "python -m pipeline.prepare --dataset cifar10" in str(error.value)


def test_a_model_that_is_not_a_keras_file(repo):
    (repo / "models" / EXPERIMENT / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(EvaluationError, match="cannot load the Keras model"):
        run_stage(repo)


def test_a_model_for_another_number_of_classes(repo):
    import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    model.save(repo / "models" / EXPERIMENT / "model.keras")
    with pytest.raises(EvaluationError, match="model outputs 5 logits, the data set has 10 classes"):
        run_stage(repo)


@pytest.mark.parametrize("text, message", [
    ("min_accuracy: [", "not valid YAML"),
    ("min_accuracy: {cifar10: {lenet5: 0.5}}\nexperiments: {cifar_huge: {max_drop: 0.1}}\n",
     "unknown experiment .not in experiments or zoo.*'cifar_huge'"),
    ("min_accuracy: {cifar10: {lenet6: 0.5}}\n", "unknown model 'lenet6'.*Did you mean 'lenet5'"),
])
def test_bad_thresholds_fail_before_scoring(repo, text, message):
    (repo / "thresholds.yaml").write_text(text)
    with pytest.raises(EvaluationError, match=message) as error:
        run_stage(repo)
    assert str(repo / "thresholds.yaml") in str(error.value)
    assert not (repo / "metrics").exists()


def test_unparseable_last_accepted_metrics(repo):
    path = repo / "metrics" / EXPERIMENT / "accepted.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"accuracy": 0.9,')
    with pytest.raises(EvaluationError, match="not valid JSON") as error:
        run_stage(repo)
    assert str(path) in str(error.value)


def test_unparseable_train_metrics(repo):
    (repo / "models" / EXPERIMENT / "train_metrics.json").write_text("{")
    with pytest.raises(EvaluationError, match="train_metrics.json: not valid JSON"):
        run_stage(repo)


def test_a_run_id_the_store_does_not_know(repo, tracking):
    write_train_metrics(repo, "0" * 32, "1")
    with pytest.raises(EvaluationError, match="is not a run in the tracking store"):
        run_stage(repo, tracking["uri"])


def test_a_logged_model_the_store_does_not_know(repo, tracking, model_file):
    run_id, version = train_run(tracking, model_file)
    write_train_metrics(repo, run_id, version, model_id="m-" + "0" * 32)
    with pytest.raises(EvaluationError, match="mlflow_model_id 'm-0+' is not a LoggedModel in the tracking store"):
        run_stage(repo, tracking["uri"])


def test_cli_errors_exit_2_with_the_file_named(repo, monkeypatch, capsys):
    from pipeline.evaluate import main

    monkeypatch.chdir(repo)
    assert main(["--experiment", "nope"]) == 2
    assert "params.yaml: unknown experiment 'nope'" in capsys.readouterr().err
    (repo / "params.yaml").write_text(SPEC_YAML + "evaluate: {batch: 3}\n")
    assert main(["--experiment", EXPERIMENT]) == 2
    assert "params.yaml:evaluate: unknown key(s) ['batch']" in capsys.readouterr().err


# ----------------------------------------------------------------------------- registry
def test_registry_skips_with_a_warning_when_ids_are_missing():
    from components.tracking.registry import log_evaluation, promote

    warnings = []
    assert log_evaluation(None, {"accuracy": 0.9}, [], warn=warnings.append) is False
    assert promote("cifar10-lenet5", None, warn=warnings.append) is False
    assert len(warnings) == 2 and "not logged to MLflow" in warnings[0] and "not moved" in warnings[1]


def test_scalar_metrics_keep_finite_top_level_numbers():
    from components.tracking.registry import scalar_metrics

    assert scalar_metrics({"accuracy": 0.5, "experiment": "x", "per_class": {}, "loss": float("nan"),
                           "params": 3, "ok": True}) == {"test_accuracy": 0.5, "test_params": 3.0}
