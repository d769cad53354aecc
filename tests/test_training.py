"""The train stage: recipes, schedules, MLflow records, resume after kill -9 (several workers: test_multi_worker.py)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

from components.config import ConfigError, from_dict, load_params
from tests.conftest import REPO
from components.training.config import (OptimizerConfig, RecipeConfig, ScheduleConfig, load_experiment,
                                        resolve_experiment)
from components.training.schedules import RecipeSchedule, build_optimizer, build_schedule


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
    with pytest.raises(ConfigError, match="unknown experiment 'x'; defined under experiments, zoo, zoo_cpu: e"):
        resolve_experiment("x", params)
    with pytest.raises(ConfigError, match="experiments.e.model: unknown model 'resnet21'. Did you mean .*'resnet20'"):
        resolve_experiment("e", params)
    params["experiments"]["e"].update(model="resnet20", recipe="nope")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; recipes: r"):
        resolve_experiment("e", params)


@pytest.mark.parametrize("entry, message", [
    ({"model": "vgg61"}, r"params.yaml:zoo_cpu.z-cpu.model: unknown model 'vgg61'. Did you mean .*'vgg16'"),
    ({"recipe": "cpu_budgit"}, r"params.yaml:zoo_cpu.z-cpu.recipe: unknown recipe 'cpu_budgit'"),
    ({"dataset": "cifar11"}, r"params.yaml:zoo_cpu.z-cpu.dataset: unknown data set 'cifar11'"),
    ({"dataset": "mnist"}, r"params.yaml:zoo_cpu.z-cpu.dataset: 'mnist' is not one of prepare.datasets "
                           r"\(fashion_mnist, cifar10\)"),
    ({"overrides": {"step": 5}}, r"zoo_cpu.z-cpu.overrides\): unknown key\(s\) \['step'\]"),
])
def test_a_bad_zoo_entry_fails_any_experiments_first_stage_naming_it(tmp_path, entry, message):
    """A typo in the 32nd zoo entry stops the train stage of any experiment of any set."""
    path = _params_with_zoo_entry(tmp_path, entry)
    with pytest.raises(ConfigError, match=message):
        load_experiment("fashion_mnist-airbench_small", str(path))


def _params_with_zoo_entry(tmp_path, entry) -> pathlib.Path:
    params = load_params(REPO / "params.yaml")
    params["zoo_cpu"]["z-cpu"] = {"dataset": "cifar10", "model": "vgg16", "recipe": "cpu_budget", **entry}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_the_train_stage_refuses_a_bad_zoo_entry_before_anything_trains(tmp_path):
    path = _params_with_zoo_entry(tmp_path, {"model": "vgg61"})
    result = subprocess.run([sys.executable, "-m", "pipeline.train", "--experiment", "cifar10-airbench",
                             "--params", str(path), "--no-tracking"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 1 and "z-cpu" in result.stderr, result.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "models").exists()


# ---------------------------------------------------------------------------- stage runs

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small synthetic CIFAR-shaped data set, prepared by the real prepare stage."""
    from tests.conftest import prepare_synthetic

    root = tmp_path_factory.mktemp("train")
    prepare_synthetic(root / "data" / "cifar10", 640, 128, {"train": 2, "validation": 2, "test": 1})
    return root


def write_params(root: pathlib.Path, epochs: int = 2, model: str = "lenet5", recipe: dict | None = None,
                 **train) -> pathlib.Path:
    params = {
        "prepare": {"out_root": str(root / "data")},
        "train": {"models_dir": str(root / "models"), "checkpoints_dir": str(root / "checkpoints"),
                  "input": {"shuffle_buffer": 1000}, **train},
        "recipes": {"quick": {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
                              "schedule": {"name": "cosine"}, "epochs": epochs, "batch_size": 32, **(recipe or {})}},
        "experiments": {"tiny": {"dataset": "cifar10", "model": model, "recipe": "quick",
                                 "model_hparams": {"activation": "relu"} if model == "lenet5" else {}}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_train(params: pathlib.Path, *args, env=None, **kwargs):
    """The stage in a subprocess, run from the params file's directory (its relative outputs land there)."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.train", "--experiment", "tiny", "--params", str(params),
                           *args], cwd=params.parent, capture_output=True, text=True, env=environment, timeout=600,
                          **kwargs)


def killed_at(point: str) -> dict:
    """The environment that makes the stage SIGKILL itself at ``point`` (components.training.callbacks.kill_point)."""
    from components.training.callbacks import KILL_AT_ENV

    return {KILL_AT_ENV: point}


def read_history(model_dir: pathlib.Path, columns=("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                                   "learning_rate")) -> list[tuple[str, ...]]:
    """history.csv's rows, without the timing columns (they never repeat)."""
    import csv

    with open(model_dir / "history.csv") as handle:
        return [tuple(row[c] for c in columns) for row in csv.DictReader(handle)]


def steps_per_epoch(stdout: str) -> int:
    """Steps per epoch from the stage's first line (``... 5 epochs x 18 steps of 32 ...``)."""
    return int(re.search(r" epochs x (\d+) steps of ", stdout).group(1))


def exported_weights(model_dir: pathlib.Path) -> list[np.ndarray]:
    return keras.saving.load_model(model_dir / "model.keras").get_weights()


@pytest.mark.parametrize("pipeline", ["tfdata", "device"])
def test_a_budget_of_fewer_steps_than_one_pass_trains_one_short_epoch(prepared, tmp_path, pipeline):
    """zoo_cpu's budgets for the ImageNet-sized models: `steps` under one epoch's worth is one
    epoch of that many batches, not rounded up to a whole pass."""
    (tmp_path / "data").symlink_to(prepared / "data")
    params = write_params(tmp_path, recipe={"steps": 7, "schedule": {"name": "one_cycle"}},
                          input={"shuffle_buffer": 1000, "pipeline": pipeline})
    result = run_train(params, "--no-tracking")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 epochs x 7 steps of 32" in result.stdout  # a pass is 20 steps of 32 here
    metrics = json.loads((tmp_path / "models" / "tiny" / "train_metrics.json").read_text())
    assert (metrics["epochs"], metrics["steps_per_epoch"], metrics["input_pipeline"]) == (1, 7, pipeline)
    assert len(read_history(tmp_path / "models" / "tiny")) == 1


def test_two_epochs_are_tracked_in_mlflow(prepared, tmp_path):
    import mlflow

    root = tmp_path
    (root / "data").symlink_to(prepared / "data")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # Label smoothing trains on one-hot rows: the logged input config must say so.
    # System metrics sampled every second (MLflow's default, 10 s, can outlast this tiny run).
    sampling = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"}
    result = run_train(write_params(root, recipe={"label_smoothing": 0.1}), env={"MLFLOW_TRACKING_URI": uri, **sampling})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[train] epoch") == 2
    model_dir = root / "models" / "tiny"
    metrics = json.loads((model_dir / "train_metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["registered_model_name"] == "tiny"
    assert sorted(p.name for p in model_dir.iterdir()) == ["history.csv", "learning_curves.png", "model.keras",
                                                          "model_summary.txt", "train_metrics.json"]
    assert not (root / "checkpoints" / "tiny").exists()  # finished runs leave nothing to resume

    client = mlflow.MlflowClient(uri)
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "cifar10"
    params = run.data.params
    assert params["model"] == "lenet5" and params["recipe.optimizer.name"] == "sgd" and params["recipe.epochs"] == "2"
    assert params["recipe.label_smoothing"] == "0.1" and params["input.labels"] == "one_hot"
    assert run.data.tags["dvc_stage"] == "train@tiny" and len(run.data.tags["git_commit"]) >= 7
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    for name in ("loss", "accuracy", "val_loss", "learning_rate", "epoch_time_s", "images_per_s"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 2, name
    assert any(k.startswith("system/") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.csv", "learning_curves.png", "model_summary.txt", "train_metrics.json"} <= artifacts
    contexts = {i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"]
                for i in run.inputs.dataset_inputs}
    assert contexts == {"cifar10-train": "training", "cifar10-validation": "validation"}
    # The model is a LoggedModel of the run, registered from it.
    model_id = metrics["mlflow_model_id"]
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    assert client.get_logged_model(model_id).status == "READY"
    version = client.get_model_version("tiny", metrics["registered_model_version"])
    assert version.run_id == run.info.run_id and version.source == f"models:/{model_id}"
    assert {"exported_val_accuracy", "train_time_s", "train_images_per_s"} <= set(run.data.metrics)
    # The run's train_metrics.json is the published file, byte for byte, run id and version included.
    logged_metrics = pathlib.Path(client.download_artifacts(run.info.run_id, "train_metrics.json", str(root)))
    assert logged_metrics.read_bytes() == (model_dir / "train_metrics.json").read_bytes()
    logged = mlflow.models.Model.load(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    assert logged.signature is not None and logged.saved_input_example_info is not None
    # The exported model takes raw uint8 images: normalisation is inside.
    exported = keras.saving.load_model(model_dir / "model.keras")
    raw = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    logits = keras.ops.convert_to_numpy(exported(raw))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(exported(raw.astype(np.float32))), rtol=1e-6)


def test_model_directory_is_complete_before_it_is_published(prepared, tmp_path):
    """Killed just before the rename: the previous directory is untouched, and the one set
    aside already holds everything, MLflow's run id and registered version included."""
    import mlflow

    (tmp_path / "data").symlink_to(prepared / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = write_params(tmp_path, epochs=1)
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "previous.txt").write_text("the previous complete model directory\n")
    expected = ["history.csv", "learning_curves.png", "model.keras", "model_summary.txt", "train_metrics.json"]

    killed = run_train(params, env={"MLFLOW_TRACKING_URI": uri, **killed_at("model-staged")})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in (models / "tiny").iterdir()) == ["previous.txt"]
    staged = models / ".tiny.staged"
    assert sorted(p.name for p in staged.iterdir()) == expected
    staged_metrics = json.loads((staged / "train_metrics.json").read_text())
    assert staged_metrics["mlflow_run_id"] and staged_metrics["registered_model_version"]
    assert staged_metrics["registered_model_name"] == "tiny"

    result = run_train(params, env={"MLFLOW_TRACKING_URI": uri})  # resumes after the last epoch: export only
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[train] epoch" not in result.stdout
    assert sorted(p.name for p in models.iterdir()) == ["tiny"]  # nothing set aside is left behind
    assert sorted(p.name for p in (models / "tiny").iterdir()) == expected
    published = (models / "tiny" / "train_metrics.json").read_bytes()
    metrics = json.loads(published)
    assert metrics["mlflow_run_id"] == staged_metrics["mlflow_run_id"]  # the same run, continued
    client = mlflow.MlflowClient(uri)
    assert client.get_model_version("tiny", metrics["registered_model_version"]).run_id == metrics["mlflow_run_id"]
    logged = client.download_artifacts(metrics["mlflow_run_id"], "train_metrics.json", str(tmp_path))
    assert pathlib.Path(logged).read_bytes() == published


def test_killed_run_resumes_from_last_completed_epoch(prepared, tmp_path):
    """Killed inside epoch 3's checkpoint write (weights on disk, state not committed), then
    restarted with the same command: it continues after epoch 2 with epoch 2's weights,
    optimizer step, momentum and schedule, and, deterministic, ends exactly where an
    uninterrupted run of the same recipe ends."""
    import mlflow

    (tmp_path / "data").symlink_to(prepared / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # params.yaml's input and steps per call: the decoded split, 3 steps per call (not a divisor of the epoch)
    decoded = {"steps_per_execution": 3, "input": {"cache": "decoded"}}
    params = write_params(tmp_path, epochs=5, deterministic=True, **decoded)
    checkpoints = tmp_path / "checkpoints" / "tiny"

    killed = run_train(params, env={"MLFLOW_TRACKING_URI": uri, **killed_at("checkpoint-written:3")})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert killed.stdout.count("[train] epoch") == 2  # epoch 3 trained, its checkpoint half-written
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0002", "epoch-0003.tmp"]
    assert sorted(p.name for p in (checkpoints / "epoch-0003.tmp").iterdir()) == ["model.weights.h5", "state.json"]
    assert not (tmp_path / "models" / "tiny").exists()

    result = run_train(params, env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 0, result.stderr[-3000:]
    steps = steps_per_epoch(result.stdout)
    assert f"resuming tiny after epoch 2 of 5 at optimizer step {2 * steps} " in result.stdout
    assert result.stdout.count("[train] epoch") == 3

    reference_root = tmp_path / "reference"
    reference_root.mkdir()
    (reference_root / "data").symlink_to(prepared / "data")
    reference = run_train(write_params(reference_root, epochs=5, deterministic=True, **decoded), "--no-tracking")
    assert reference.returncode == 0, reference.stderr[-3000:]

    model_dir, reference_dir = tmp_path / "models" / "tiny", reference_root / "models" / "tiny"
    history, reference_history = read_history(model_dir), read_history(reference_dir)
    assert [row[0] for row in history] == ["1", "2", "3", "4", "5"]
    # Same learning rate each epoch (the schedule continued at the restored step), same
    # losses (epoch 2's weights, momentum and data order restored), same final weights.
    assert history == reference_history
    metrics = json.loads((model_dir / "train_metrics.json").read_text())
    reference_metrics = json.loads((reference_dir / "train_metrics.json").read_text())
    assert metrics["weights_sha256"] == reference_metrics["weights_sha256"]
    for ours, theirs in zip(exported_weights(model_dir), exported_weights(reference_dir), strict=True):
        np.testing.assert_array_equal(ours, theirs)

    client = mlflow.MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(metrics["mlflow_run_id"], "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4, 5]  # nothing logged twice


def test_resumed_after_the_last_checkpoint_still_exports_the_weight_average(prepared, tmp_path):
    """Killed after the last epoch's checkpoint, before export: the restart trains nothing,
    and still weighs the moving average (from the restored optimizer state) against the
    best epoch, as an uninterrupted run does after fit."""
    runs = {}
    for name, kill in (("killed", killed_at("checkpoint-committed:2")), ("reference", {})):
        root = tmp_path / name
        root.mkdir()
        (root / "data").symlink_to(prepared / "data")
        params = write_params(root, epochs=2, deterministic=True, recipe={"ema_decay": 0.9})
        first = run_train(params, "--no-tracking", env=kill)
        runs[name] = (root, params, first)
    root, params, killed = runs["killed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in (root / "checkpoints" / "tiny").iterdir())[-1] == "epoch-0002"
    resumed = run_train(params, "--no-tracking")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming tiny after epoch 2 of 2 at optimizer step {2 * steps_per_epoch(resumed.stdout)} " in resumed.stdout
    assert "[train] epoch" not in resumed.stdout  # nothing left to train

    reference_root, _, reference = runs["reference"]
    assert reference.returncode == 0, reference.stderr[-3000:]
    metrics = json.loads((root / "models" / "tiny" / "train_metrics.json").read_text())
    expected = json.loads((reference_root / "models" / "tiny" / "train_metrics.json").read_text())
    # The average was evaluated (not the last epoch's raw weights under its name) ...
    last_epoch_val_loss = float(read_history(root / "models" / "tiny")[-1][3])
    assert metrics["export_candidates"]["ema"]["val_loss"] != pytest.approx(last_epoch_val_loss, abs=1e-6)
    # ... and it is the very average an uninterrupted run weighs and exports.
    assert metrics["export_candidates"] == expected["export_candidates"]
    assert metrics["exported_weights"] == expected["exported_weights"]
    assert metrics["weights_sha256"] == expected["weights_sha256"]


def test_deterministic_training_gives_identical_weights(prepared, tmp_path):
    """train.deterministic: two runs of the same recipe end with the same weights, bit for bit,
    even with the input order left free (input.deterministic: false), which the flag overrides:
    here, without the flag, such runs end with different weights."""
    digests, weights = [], []
    for name in ("first", "second"):
        root = tmp_path / name
        root.mkdir()
        (root / "data").symlink_to(prepared / "data")
        params = write_params(root, epochs=1, deterministic=True, input={"shuffle_buffer": 1000, "deterministic": False})
        result = run_train(params, "--no-tracking")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "deterministic on" in result.stdout
        metrics = json.loads((root / "models" / "tiny" / "train_metrics.json").read_text())
        assert metrics["deterministic"] is True
        digests.append(metrics["weights_sha256"])
        weights.append(exported_weights(root / "models" / "tiny"))
    assert digests[0] == digests[1]
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)


def test_execution_steps_fit_the_epoch_where_keras_needs_it():
    from components.training.inputs import execution_steps

    assert [execution_steps(16, 421, one_pass=True), execution_steps(16, 5, one_pass=True)] == [16, 5]
    # an endless stream: Keras 3.15 trains whole executions only, so a divisor of the epoch
    assert [execution_steps(16, n, one_pass=False) for n in (421, 420, 351, 8)] == [1, 15, 13, 8]
    assert execution_steps(1, 420, one_pass=False) == 1


def test_blocks_stack_each_pass_and_follow_one_pass_with_the_next(prepared):
    """With ``block``, fit's input is the same passes (the same batches in the same order,
    a new pass per epoch, the first the resumed epoch's) stacked ``block`` batches at a time,
    the last block of a pass shorter, one pass after another; only where blocks help."""
    from components.inputs import InputConfig, check_prepared, steps_per_epoch
    from components.training.inputs import build_training_inputs, execution_blocks

    data_dir = prepared / "data" / "cifar10"
    info = check_prepared(data_dir)
    config = InputConfig(batch_size=64, cache="decoded", augment=["standard"], pipeline="tfdata")
    per_epoch = steps_per_epoch(info, "train", 64, drop_remainder=True)
    assert per_epoch == 8  # blocks of 3: 3 + 3 + 2 a pass

    def batches(block, completed=0, passes=2):
        train = build_training_inputs(data_dir, info, config, per_epoch, completed, block=block).train
        if not block:
            return [batch for _ in range(passes) for batch in train]  # one pass per iteration
        stacked = list(train.take(passes * 3))
        assert [len(labels) for _, labels in stacked] == [3, 3, 2] * passes
        return [(images[i], labels[i]) for images, labels in stacked for i in range(len(labels))]

    def same(first, second):
        assert len(first) == len(second) == 2 * per_epoch
        for (images, labels), (other_images, other_labels) in zip(first, second, strict=True):
            np.testing.assert_array_equal(images, other_images)
            np.testing.assert_array_equal(labels, other_labels)

    same(batches(3), batches(0))
    same(batches(3, completed=3), batches(0, completed=3))  # a resumed run's passes
    assert not np.array_equal(batches(3, completed=1)[0][0], batches(3)[0][0])
    assert execution_blocks(config, 16, distributed=False) == 16
    assert execution_blocks(config, 1, distributed=False) == 0  # one step per call: Keras' own function
    assert execution_blocks(config, 16, distributed=True) == 0  # several replicas: Keras' own function
    for endless in ({"repeat": True}, {"pipeline": "device"}):
        assert execution_blocks(dataclasses.replace(config, **endless), 16, distributed=False) == 0
    # An endless stream (what bench train times) in blocks where asked: the same batches, stacked.
    endless = dataclasses.replace(config, repeat=True)
    stream = build_training_inputs(data_dir, info, endless, per_epoch, 0, block=3).train
    unblocked = list(build_training_inputs(data_dir, info, endless, per_epoch, 0).train.take(6))
    stacked = list(stream.take(2))
    assert [len(labels) for _, labels in stacked] == [3, 3]
    same_as = [(images[i], labels[i]) for images, labels in stacked for i in range(3)]
    for (images, labels), (other_images, other_labels) in zip(same_as, unblocked, strict=True):
        np.testing.assert_array_equal(images, other_images)
        np.testing.assert_array_equal(labels, other_labels)


@pytest.mark.parametrize("cache", ["none", "decoded"])
def test_several_steps_per_call_train_the_same_steps_and_weights_as_one(prepared, tmp_path, cache):
    """train.steps_per_execution changes how many steps one compiled call runs, not what is
    trained: with 3 per call (which does not divide the epoch's 18 or 20 steps) each epoch
    still runs exactly its steps, and the history and weights equal one step per call's."""
    runs = {}
    for per_call in (1, 3):
        root = tmp_path / f"per-call-{per_call}"
        root.mkdir()
        (root / "data").symlink_to(prepared / "data")
        params = write_params(root, epochs=2, deterministic=True, steps_per_execution=per_call,
                              input={"shuffle_buffer": 1000, "cache": cache})
        result = run_train(params, "--no-tracking")
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{per_call} step(s) per call" in result.stdout
        # 3 per call: one input block per call, our train function (components/training/blocks.py)
        assert ("one input block per call" in result.stdout) == (per_call > 1)
        runs[per_call] = (root / "models" / "tiny", steps_per_epoch(result.stdout))
    (one, steps), (three, _) = runs[1], runs[3]
    assert steps % 3 != 0
    assert read_history(three) == read_history(one)
    # equal weights: an extra step per epoch (Keras' rounding up to whole calls) would change them
    metrics = [json.loads((d / "train_metrics.json").read_text()) for d in (one, three)]
    assert metrics[0]["weights_sha256"] == metrics[1]["weights_sha256"]


def test_under_a_mirrored_strategy_keras_own_function_takes_the_batches(prepared, tmp_path):
    """Blocks are for one device: under tf.distribute's MirroredStrategy (here one CPU
    replica) the input stays one batch per element and Keras' own train function runs."""
    (tmp_path / "data").symlink_to(prepared / "data")
    params = write_params(tmp_path, epochs=1, distribute="mirrored", steps_per_execution=3,
                          input={"cache": "decoded"})
    result = run_train(params, "--no-tracking")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 step(s) per call" in result.stdout and "one input block per call" not in result.stdout
    assert json.loads((tmp_path / "models" / "tiny" / "train_metrics.json").read_text())["steps_per_execution"] == 3


def test_bad_inputs_fail_before_training(prepared, tmp_path):
    params = write_params(tmp_path)  # no data directory: not prepared
    result = run_train(params, "--no-tracking")
    assert result.returncode == 1 and "not prepared?" in result.stderr and "pipeline.prepare --dataset cifar10" in result.stderr
    assert "[train] epoch" not in result.stdout

    (tmp_path / "data").symlink_to(prepared / "data")
    checkpoint = tmp_path / "checkpoints" / "tiny" / "epoch-0001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.weights.h5").write_bytes(b"")
    (checkpoint / "state.json").write_text(json.dumps({"completed_epochs": 1, "weights": "model.weights.h5",
                                                       "fingerprint": {"model": "resnet20", "dataset": "cifar10"}}))
    result = run_train(params, "--no-tracking")
    assert result.returncode == 1
    assert "checkpoint is of model 'resnet20', this experiment trains 'lenet5'" in result.stderr

    result = run_train(params, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.returncode == 1 and "MLflow tracking store http://127.0.0.1:9 is not usable" in result.stderr


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


def test_bench_train_measures_the_stage_against_the_compute_ceiling(prepared, tmp_path):
    """`bench train` runs the train stage itself (on a synthetic set, tracked), each run followed
    by the compiled step on resident tensors, and reports their ratio as `ratio_to_ceiling`:
    the median over the runs of each run against the ceiling timed right after it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"]["out_root"] = str(prepared / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "pipeline.bench", "train", "--dataset", "cifar10", "--model",
                             "lenet5", "--params", str(tmp_path / "params.yaml"), "--steps", "3", "--repeats", "3",
                             "--stage-images", "1280", "--stage-epochs", "2", "--stage-runs", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    runs = figures["stage_runs"]
    assert len(runs) == 2 and "[bench train] stage run 2/2: {" in result.stderr
    for run in runs:
        assert len(run["epoch_images_per_s"]) == 2  # the stage ran its two epochs
        assert run["images_per_s"] == run["epoch_images_per_s"][1]  # the steady one: after the first
        assert run["wall_s"] > 0 and run["images"] == 1280
        # the ceiling timed in windows of one epoch: the training images left after the validation
        # carve (1,118 of 1,280) are 8 batches of 128, nearest to three calls of 3 steps
        assert 1024 <= run["train_images"] < 1152 and run["steps_per_epoch"] == 8 and run["ceiling_steps"] == 9
        # three windows (--repeats 3): the best and the median of their rates
        assert run["ceiling_images_per_s"] >= run["ceiling_median_images_per_s"] > 0
        # steady against steady, best against best, and steady against best (the ratios are
        # rounded to 3 decimals from the rates before these are printed to 0.1 images/s)
        assert run["ratio_to_ceiling"] == pytest.approx(run["images_per_s"] / run["ceiling_median_images_per_s"],
                                                        abs=0.0006)
        assert run["ratio_to_best_ceiling"] == pytest.approx(run["images_per_s"] / run["ceiling_images_per_s"],
                                                             abs=0.0006)
        # the stage's best epoch after the first (here the only one)
        assert run["best_epoch_ratio_to_ceiling"] == run["ratio_to_best_ceiling"]
    assert figures["ratio_to_ceiling"] == round((runs[0]["ratio_to_ceiling"] + runs[1]["ratio_to_ceiling"]) / 2, 3)
    assert figures["ratio_to_best_ceiling"] == round(
        (runs[0]["ratio_to_best_ceiling"] + runs[1]["ratio_to_best_ceiling"]) / 2, 3)
    assert figures["stage_images_per_s"] == round((runs[0]["images_per_s"] + runs[1]["images_per_s"]) / 2, 3)
    assert figures["ceiling_images_per_s"] > 0
    assert figures["ours_to_ceiling"] == round(figures["ours_images_per_s"] / figures["ceiling_images_per_s"], 3)
    assert figures["target_ratio_to_ceiling_min"] == 0.95
    # params.yaml's 16 steps per call, cut to a divisor of the 3 timed steps; the ceiling runs them
    # as the stage does, and once more one step per call
    assert figures["steps_per_call"] == 3 and figures["ceiling_one_step_per_call_images_per_s"] > 0
    assert figures["ratio_to_one_step_per_call_ceiling"] == round(
        figures["stage_images_per_s"] / figures["ceiling_one_step_per_call_images_per_s"], 3)
    from components.backend import cpu_has_bfloat16

    # the ceiling computes in the stage's precision: train.mixed_precision (auto) as the trainer resolves it
    assert figures["stage_images"] == 1280
    assert figures["precision"] == ("mixed_bfloat16" if cpu_has_bfloat16() else "float32")
    assert not list(REPO.glob("metrics/bench")) and not list(REPO.glob("models/bench"))  # all in a scratch directory
