"""The train stage: recipes, schedules, MLflow records, resume after kill -9, multi-worker."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml

from components.config import ConfigError, from_dict
from components.training.config import OptimizerConfig, RecipeConfig, ScheduleConfig, resolve_experiment
from components.training.schedules import RecipeSchedule, build_optimizer, build_schedule
from tests.conftest import REPO


def schedule_at(steps, peak=1.0, steps_per_epoch=10, epochs=10, **config):
    schedule = RecipeSchedule(peak, steps_per_epoch, steps_per_epoch * epochs,
                              {**ScheduleConfig().__dict__, **config})
    return [round(float(schedule(step)), 6) for step in steps]


def test_step_schedule_drops_at_epoch_boundaries():
    # 10 steps per epoch: epochs 0-4 at 1.0, 5-7 at 0.1, 8-9 at 0.01.
    assert schedule_at([0, 49, 50, 79, 80, 99], name="step", boundaries=[5, 8], factors=[0.1, 0.01]) == \
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]


def test_exponential_schedule_smooth_and_staircase():
    assert schedule_at([0, 10, 15], name="exponential", decay_rate=0.5, decay_epochs=1) == \
        [1.0, 0.5, round(0.5 ** 1.5, 6)]
    assert schedule_at([15, 25], name="exponential", decay_rate=0.5, decay_epochs=1, staircase=True) == [0.5, 0.25]


def test_cosine_with_warmup():
    # 2 warm-up epochs = 20 steps: step s gives (s + 1) / 20; then cosine over 80 steps to 0.
    values = schedule_at([0, 9, 19, 20, 60, 100], name="cosine", warmup_epochs=2)
    assert values[:3] == [0.05, 0.5, 1.0]
    assert values[3] == 1.0 and values[4] == 0.5 and values[5] == 0.0


def test_one_cycle_rises_then_falls():
    # 100 steps, peak at 25%: 0.04 at step 0, 1.0 at step 25, final 0.0 at step 100.
    values = schedule_at([0, 25, 62.5, 100], name="one_cycle", peak_at=0.25, start_fraction=0.04, final_fraction=0.0)
    assert values == [0.04, 1.0, 0.5, 0.0]


def test_constant_and_plateau():
    assert schedule_at([0, 99], name="constant", peak=0.3) == [0.3, 0.3]
    # plateau: a plain rate, which ReduceLROnPlateau scales.
    assert build_schedule(OptimizerConfig(learning_rate=0.3), ScheduleConfig(name="plateau"), 10, 5) == 0.3


@pytest.mark.parametrize("name, cls, attribute, value", [
    ("sgd", keras.optimizers.SGD, "nesterov", True),
    ("adam", keras.optimizers.Adam, "beta_2", 0.99),
    ("adamw", keras.optimizers.AdamW, "weight_decay", 0.05),
    ("rmsprop", keras.optimizers.RMSprop, "rho", 0.8),
])
def test_each_optimizer(name, cls, attribute, value):
    config = from_dict(OptimizerConfig, {"name": name, "learning_rate": 0.01, "nesterov": name == "sgd",
                                         "beta_2": 0.99, "rho": 0.8,
                                         "decoupled_weight_decay": 0.05 if name == "adamw" else 0.0})
    optimizer = build_optimizer(config, 0.01, ema_decay=0.999)
    assert isinstance(optimizer, cls)
    assert getattr(optimizer, attribute) == pytest.approx(value)
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.999)


@pytest.mark.parametrize("recipe, message", [
    ({"optimizer": {"name": "adagrad"}}, "got 'adagrad', expected one of ['sgd', 'adam', 'adamw', 'rmsprop']"),
    ({"schedule": {"name": "linear"}}, "got 'linear', expected one of"),
    ({"optimizer": {"learning_rate": -1}}, "learning_rate must be in (0, 10], got -1"),
    ({"schedule": {"name": "step", "boundaries": [5], "factors": []}}, "as many factors as boundaries"),
    ({"label_smoothing": 1.5}, "label_smoothing must be in [0, 1), got 1.5"),
    ({"epoch": 3}, "unknown key(s) ['epoch']"),
])
def test_bad_recipes_are_rejected(recipe, message):
    with pytest.raises(ConfigError) as caught:
        from_dict(RecipeConfig, recipe, where="params.yaml:recipes.r")
    assert message in str(caught.value) and "params.yaml:recipes.r" in str(caught.value)


def test_unknown_experiment_model_and_recipe():
    params = {"recipes": {"r": {}}, "experiments": {"e": {"dataset": "cifar10", "model": "resnet21", "recipe": "r"}}}
    with pytest.raises(ConfigError, match="unknown experiment 'x'; defined under 'experiments' or 'zoo': e"):
        resolve_experiment("x", params)
    with pytest.raises(ValueError, match="unknown model 'resnet21'. Did you mean .*'resnet20'"):
        resolve_experiment("e", params)
    params["experiments"]["e"].update(model="resnet20", recipe="nope")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; recipes: r"):
        resolve_experiment("e", params)


# ---------------------------------------------------------------------------- stage runs

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small synthetic CIFAR-shaped data set, prepared by the real prepare stage."""
    from tests.conftest import prepare_synthetic

    root = tmp_path_factory.mktemp("train")
    prepare_synthetic(root / "data" / "cifar10", 640, 128, {"train": 2, "validation": 2, "test": 1})
    return root


def write_params(root: pathlib.Path, epochs: int = 2, model: str = "lenet5", **train) -> pathlib.Path:
    params = {
        "train": {"data_root": str(root / "data"), "models_dir": str(root / "models"),
                  "checkpoints_dir": str(root / "checkpoints"), "input": {"shuffle_buffer": 1000},
                  **train},
        "recipes": {"quick": {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
                              "schedule": {"name": "cosine"}, "epochs": epochs, "batch_size": 32}},
        "experiments": {"tiny": {"dataset": "cifar10", "model": model, "recipe": "quick",
                                 "model_hparams": {"activation": "relu"} if model == "lenet5" else {}}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_train(params: pathlib.Path, *args, env=None, **kwargs):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.train", "--experiment", "tiny", "--params", str(params),
                           *args], cwd=REPO, capture_output=True, text=True, env=environment, timeout=600, **kwargs)


def test_two_epochs_are_tracked_in_mlflow(prepared, tmp_path):
    import mlflow

    root = tmp_path
    (root / "data").symlink_to(prepared / "data")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = run_train(write_params(root), env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[train] epoch") == 2
    model_dir = root / "models" / "tiny"
    metrics = json.loads((model_dir / "train_metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["registered_model_name"] == "cifar10-lenet5"
    assert sorted(p.name for p in model_dir.iterdir()) == ["history.csv", "learning_curves.png", "model.keras",
                                                          "model_summary.txt", "train_metrics.json"]
    assert not (root / "checkpoints" / "tiny").exists()  # finished runs leave nothing to resume

    client = mlflow.MlflowClient(uri)
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "cifar10"
    params = run.data.params
    assert params["model"] == "lenet5" and params["recipe.optimizer.name"] == "sgd" and params["recipe.epochs"] == "2"
    assert run.data.tags["dvc_stage"] == "train@tiny" and len(run.data.tags["git_commit"]) >= 7
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    for name in ("loss", "accuracy", "val_loss", "learning_rate", "epoch_time_s", "images_per_s"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    assert any(k.startswith("system/") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.csv", "learning_curves.png", "model_summary.txt", "train_metrics.json", "model"} <= artifacts
    assert run.inputs.dataset_inputs[0].dataset.name == "cifar10"
    version = client.get_model_version("cifar10-lenet5", metrics["registered_model_version"])
    assert version.run_id == run.info.run_id
    logged = mlflow.models.Model.load(run.info.artifact_uri.removeprefix("file://") + "/model")
    assert logged.signature is not None and logged.saved_input_example_info is not None
    # The exported model takes raw uint8 images: normalisation is inside.
    exported = keras.saving.load_model(model_dir / "model.keras")
    raw = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    logits = keras.ops.convert_to_numpy(exported(raw))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(exported(raw.astype(np.float32))), rtol=1e-6)


def test_killed_run_resumes_from_last_completed_epoch(prepared, tmp_path):
    import mlflow

    (tmp_path / "data").symlink_to(prepared / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path, epochs=5)
    state = tmp_path / "checkpoints" / "tiny" / "state.json"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_TRACKING_URI": uri}
    process = subprocess.Popen([sys.executable, "-m", "pipeline.train", "--experiment", "tiny", "--params", str(params)],
                               cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["completed_epochs"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    completed = json.loads(state.read_text())["completed_epochs"]
    assert 2 <= completed < 5, "the run should have been killed mid-training"
    assert not (tmp_path / "models" / "tiny").exists()

    result = run_train(params, env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming tiny after epoch {completed} of 5" in result.stdout
    assert result.stdout.count("[train] epoch") == 5 - completed
    history = (tmp_path / "models" / "tiny" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3", "4", "5"]
    metrics = json.loads((tmp_path / "models" / "tiny" / "train_metrics.json").read_text())
    client = mlflow.MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(metrics["mlflow_run_id"], "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4, 5]  # nothing logged twice


def test_bad_inputs_fail_before_training(prepared, tmp_path):
    params = write_params(tmp_path)  # no data directory: not prepared
    result = run_train(params, "--no-tracking")
    assert result.returncode == 1 and "not prepared?" in result.stderr and "pipeline.prepare --dataset cifar10" in result.stderr
    assert "[train] epoch" not in result.stdout

    (tmp_path / "data").symlink_to(prepared / "data")
    checkpoint = tmp_path / "checkpoints" / "tiny"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"completed_epochs": 1, "fingerprint": {"model": "resnet20",
                                                                                               "dataset": "cifar10"}}))
    result = run_train(params, "--no-tracking")
    assert result.returncode == 1
    assert "checkpoint is of model 'resnet20', this experiment trains 'lenet5'" in result.stderr

    result = run_train(params, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.returncode == 1 and "MLflow tracking store http://127.0.0.1:9 is not usable" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_worker_processes_train_together(prepared, tmp_path):
    (tmp_path / "data").symlink_to(prepared / "data")
    params = write_params(tmp_path, epochs=1)
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "--experiment", "tiny", "--params", str(params), "--no-tracking"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**environment, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "2 replica(s)" in outputs[0][0]
    metrics = json.loads((tmp_path / "models" / "tiny" / "train_metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert not [p for p in (tmp_path / "checkpoints").iterdir()]  # the worker's private checkpoints are gone


def test_a_run_that_fails_ends_failed_with_the_error(prepared, tmp_path):
    import mlflow

    data = tmp_path / "data" / "cifar10"
    shutil.copytree(prepared / "data" / "cifar10", data)
    shard = sorted(data.glob("cifar10-train.tfrecord-*"))[0]
    payload = bytearray(shard.read_bytes())
    payload[5000] ^= 0xFF  # one flipped byte: only the full shard check, inside the run, finds it
    shard.write_bytes(bytes(payload))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path, input={"shuffle_buffer": 100, "verify_shards": "full"})
    result = run_train(params, env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 1 and f"{shard.name}: corrupt TFRecord" in result.stderr, result.stderr[-2000:]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])
    assert run.info.status == "FAILED" and "corrupt TFRecord" in run.data.tags["error"]
