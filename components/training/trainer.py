"""Train one experiment: data from the prepared TFRecords, a model from the zoo, a recipe.

:func:`train_experiment` is the library entry point (``pipeline/train.py`` calls it and
adds MLflow through ``callbacks``). It

* checks the prepared data and every setting before the first step;
* picks the strategy, mixed precision and XLA (on where they help: with a GPU);
* resumes from ``<checkpoints_dir>/<experiment>/`` when a previous run was interrupted
  (same command, continues after its last completed epoch, same total epochs);
* keeps the best weights on validation accuracy and exports them, with normalisation
  built in, as ``<models_dir>/<experiment>/model.keras`` taking raw uint8 images;
* writes ``history.csv``, ``train_metrics.json``, ``learning_curves.png`` and
  ``model_summary.txt`` beside it. The model directory is assembled aside and renamed
  into place, so it is complete or absent.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
import statistics
import time
from typing import Callable, Sequence

import keras
import tensorflow as tf

from components.config import from_dict, to_dict
from components.data.errors import DataError
from components.inputs import InputConfig, build_dataset, check_prepared, normalization_layer, steps_per_epoch
from components.inputs.dataset import one_hot_labels
from components.models import create_model, model_info
from components.training.callbacks import Checkpointer, EpochTimer, ProgressLine, write_atomically, write_history_csv
from components.training.config import Experiment, TrainSettings
from components.training.distribute import is_chief, make_strategy
from components.training.schedules import build_optimizer, build_schedule, plateau_callback


class TrainingError(RuntimeError):
    """A setting, data set or checkpoint that makes training impossible; raised before any step."""


@dataclasses.dataclass
class TrainResult:
    experiment: str
    model_dir: pathlib.Path
    history: list[dict]
    metrics: dict


def input_config(experiment: Experiment, settings: TrainSettings) -> InputConfig:
    """The input pipeline's config: the stage's shared knobs plus the recipe's batch, augmentation and seed."""
    recipe = experiment.recipe
    merged = {**settings.input, "batch_size": recipe.batch_size, "augment": list(recipe.augment), "seed": recipe.seed}
    return from_dict(InputConfig, merged, where=f"train.input (+ recipe {experiment.recipe_name})")


def fingerprint(experiment: Experiment, inputs: InputConfig) -> dict:
    """What a checkpoint must match to be resumed."""
    return {"dataset": experiment.dataset, "model": experiment.model, "model_hparams": experiment.model_hparams,
            "recipe": to_dict(experiment.recipe), "input": to_dict(inputs)}


def model_hparams(experiment: Experiment) -> dict:
    """The experiment's model hyperparameters plus the recipe's weight decay and dropout,
    where the model has them."""
    defaults = model_info(experiment.model).defaults
    hparams = dict(experiment.model_hparams)
    for key in ("weight_decay", "dropout"):
        value = getattr(experiment.recipe, key)
        if value is not None:
            if key not in defaults:
                raise TrainingError(f"recipe {experiment.recipe_name!r} sets {key}={value}, but model "
                                    f"{experiment.model!r} has no {key} (its hyperparameters: {sorted(defaults)})")
            hparams.setdefault(key, value)
    return hparams


def build_training_model(experiment: Experiment, info: dict, inputs: InputConfig) -> keras.Model:
    """Normalisation (from the recorded statistics) in front of the zoo model: takes raw images."""
    image_shape = tuple(info["image_shape"])
    core = create_model(experiment.model, image_shape, info["num_classes"], **model_hparams(experiment))
    raw = keras.Input(image_shape, name="image")
    logits = core(normalization_layer(info, inputs)(raw))
    return _LocalBatchBuildModel(raw, logits, name=f"{experiment.dataset}-{experiment.model}")


class _LocalBatchBuildModel(keras.Model):
    """A functional model whose first ``fit`` builds from this worker's own batch.

    Keras 3.15 all-reduces the first distributed batch ("MEAN") only to learn its shapes,
    and that reduce fails under MultiWorkerMirroredStrategy. The local replica's batch
    has the same shapes, so build from it instead. Exported models are plain
    ``keras.Model``s (see :func:`export`).
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None or data_batch is not None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            local = self.distribute_strategy.experimental_local_results
            data_batch = tf.nest.map_structure(
                lambda value: local(value)[0] if isinstance(value, tf.distribute.DistributedValues) else value, batch)
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)


def train_experiment(experiment: Experiment, settings: TrainSettings, *, callbacks: Sequence[keras.callbacks.Callback] = (),
                     resume_state: Callable[[dict], None] | None = None, extra_state: dict | None = None,
                     log: Callable[[str], None] = print) -> TrainResult:
    """Train ``experiment`` to completion (resuming if a checkpoint matches) and export it.

    ``resume_state`` is called with the checkpoint's saved state before training resumes
    (the MLflow edge uses it to continue the same run); ``extra_state`` is stored with
    every checkpoint.
    """
    # First: a multi-worker strategy must exist before anything initialises TensorFlow.
    strategy = make_strategy(settings.distribute)
    recipe = experiment.recipe
    data_dir = pathlib.Path(settings.data_root) / experiment.dataset
    try:
        info = check_prepared(data_dir, ("train", "validation"), mode=(settings.input or {}).get("verify_shards", "full"))
    except DataError as error:
        raise DataError(f"{error}\n(data set '{experiment.dataset}' not prepared? run "
                        f"`python -m pipeline.prepare --dataset {experiment.dataset}` or `dvc repro`)") from None
    inputs = input_config(experiment, settings)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = settings.mixed_precision == "on" or (settings.mixed_precision == "auto" and gpu)
    jit = settings.jit_compile == "on" or (settings.jit_compile == "auto" and gpu)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(recipe.seed)

    per_epoch = steps_per_epoch(info, "train", recipe.batch_size, inputs.drop_remainder)
    if per_epoch < 1:
        raise TrainingError(f"batch_size {recipe.batch_size} is larger than the {info['splits']['train']['examples']} "
                            f"training examples of {experiment.dataset}")
    epochs = math.ceil(recipe.steps / per_epoch) if recipe.steps else recipe.epochs
    log(f"[train] {experiment.name}: {experiment.model} on {experiment.dataset}, recipe {experiment.recipe_name}, "
        f"{epochs} epochs x {per_epoch} steps of {recipe.batch_size}, {strategy.num_replicas_in_sync} replica(s), "
        f"{'GPU' if gpu else 'CPU'}, mixed precision {'on' if mixed else 'off'}, XLA {'on' if jit else 'off'}")

    checkpoint_dir = pathlib.Path(settings.checkpoints_dir) / experiment.name
    if not is_chief():  # other workers checkpoint too (collectives need them), somewhere private
        checkpoint_dir = checkpoint_dir.with_name(f"{experiment.name}.worker-{os.getpid()}")
    wanted = fingerprint(experiment, inputs)
    state = load_checkpoint_state(checkpoint_dir, wanted, log)

    with strategy.scope():
        model = build_training_model(experiment, info, inputs)
        schedule = build_schedule(recipe.optimizer, recipe.schedule, per_epoch, epochs)
        optimizer = build_optimizer(recipe.optimizer, schedule, recipe.ema_decay)
        soft_labels = one_hot_labels(inputs) or recipe.label_smoothing > 0
        if soft_labels:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
            accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy], jit_compile=jit)
        if state:
            optimizer.build(model.trainable_variables)
            model.load_weights(str(checkpoint_dir / "last.weights.h5"))
    if soft_labels and not one_hot_labels(inputs):
        inputs = dataclasses.replace(inputs, labels="one_hot")  # label smoothing needs one-hot rows
    train_data = build_dataset(data_dir, "train", inputs, training=True)
    validation_data = build_dataset(data_dir, "validation", inputs, training=False)

    history = list(state["history"]) if state else []
    initial_epoch = state["completed_epochs"] if state else 0
    if state and resume_state:
        resume_state(state)
    checkpointer = Checkpointer(checkpoint_dir, wanted, history, state["best"] if state else -1.0, extra_state)
    all_callbacks = [EpochTimer(per_epoch * recipe.batch_size), plateau_callback(recipe.optimizer, recipe.schedule),
                     checkpointer, ProgressLine(epochs), *callbacks]
    started = time.perf_counter()
    if initial_epoch < epochs:
        if initial_epoch:
            log(f"[train] resuming {experiment.name} after epoch {initial_epoch} of {epochs} from {checkpoint_dir}")
        # A finite dataset and no steps_per_epoch: Keras iterates it afresh each epoch, so
        # every epoch reshuffles and draws new augmentations.
        model.fit(train_data, validation_data=validation_data, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=[c for c in all_callbacks if c is not None], verbose=0)
    train_time = time.perf_counter() - started + sum(r.get("epoch_time_s", 0) for r in history[:initial_epoch])

    selected = select_exported_weights(model, checkpoint_dir, recipe.ema_decay > 0, validation_data, log)
    metrics = {
        "experiment": experiment.name, "dataset": experiment.dataset, "model": experiment.model,
        "recipe": experiment.recipe_name, "epochs": epochs, "steps_per_epoch": per_epoch,
        "best_val_accuracy": max((r.get("val_accuracy", 0) for r in history), default=None),
        "final_val_accuracy": history[-1].get("val_accuracy") if history else None,
        "final_train_accuracy": history[-1].get("accuracy") if history else None,
        "exported_weights": selected,
        "train_time_s": round(train_time, 1),
        # The first epoch includes tracing and warm-up; the steady rate is what the others show.
        "images_per_s": round(statistics.median([r.get("images_per_s", 0) for r in history[1:] or history] or [0]), 1),
        "params": int(model.count_params()),
        "replicas": strategy.num_replicas_in_sync, "mixed_precision": mixed, "jit_compile": jit,
        # Filled in by the MLflow edge when tracking is on.
        "mlflow_run_id": None, "registered_model_name": None, "registered_model_version": None,
    }
    model_dir = pathlib.Path(settings.models_dir) / experiment.name
    if is_chief():
        export(model, experiment, history, metrics, model_dir)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    else:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log(f"[train] {experiment.name}: best val_accuracy {metrics['best_val_accuracy']:.4f}, "
        f"{metrics['train_time_s']:.0f} s, {metrics['images_per_s']:,.0f} img/s -> {model_dir}")
    return TrainResult(experiment.name, model_dir, history, metrics)


def resumable_run_id(experiment: Experiment, settings: TrainSettings) -> str | None:
    """The MLflow run of an interrupted training that this command would resume, if any."""
    state_path = pathlib.Path(settings.checkpoints_dir) / experiment.name / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if state.get("fingerprint") != fingerprint(experiment, input_config(experiment, settings)):
        return None
    return state.get("mlflow_run_id")


def load_checkpoint_state(directory: pathlib.Path, wanted: dict, log) -> dict | None:
    """The saved state if ``directory`` holds a resumable checkpoint of this experiment.

    A checkpoint of another model or data set is an error (it would be silently lost
    otherwise); one of the same model with other settings is set aside, and training
    starts over.
    """
    state_path = directory / "state.json"
    if not state_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text())
        saved = state["fingerprint"]
    except (json.JSONDecodeError, KeyError) as error:
        raise TrainingError(f"{state_path}: unreadable checkpoint state ({error}); delete {directory} to start over") from None
    for key in ("model", "dataset"):
        if saved.get(key) != wanted[key]:
            raise TrainingError(f"{directory}: checkpoint is of {key} {saved.get(key)!r}, this experiment trains "
                                f"{wanted[key]!r}; delete {directory} (or rename the experiment) to start over")
    if saved != wanted or not (directory / "last.weights.h5").exists():
        stale = directory.with_name(f"{directory.name}.stale-{int(time.time())}")
        os.replace(directory, stale)
        log(f"[train] settings changed since the checkpoint in {directory}; starting over (old one kept in {stale})")
        return None
    return state


def select_exported_weights(model: keras.Model, checkpoint_dir: pathlib.Path, has_ema: bool, validation_data, log) -> str:
    """Load the weights to export: the best epoch on validation accuracy, or the weight
    average when it does better on validation. Returns which was chosen."""
    best_path = checkpoint_dir / "best.weights.h5"
    if not has_ema:
        if best_path.exists():
            model.load_weights(str(best_path))
        return "best_epoch"
    # fit() ended with the moving average swapped in; compare it with the best epoch.
    ema_accuracy = model.evaluate(validation_data, verbose=0, return_dict=True)["accuracy"]
    ema_weights = model.get_weights()
    if best_path.exists():
        model.load_weights(str(best_path))
        best_accuracy = model.evaluate(validation_data, verbose=0, return_dict=True)["accuracy"]
        if best_accuracy >= ema_accuracy:
            log(f"[train] exporting the best epoch (val_acc {best_accuracy:.4f} >= EMA {ema_accuracy:.4f})")
            return "best_epoch"
    model.set_weights(ema_weights)
    log(f"[train] exporting the EMA weights (val_acc {ema_accuracy:.4f})")
    return "ema"


def export(model: keras.Model, experiment: Experiment, history: list[dict], metrics: dict, model_dir: pathlib.Path) -> None:
    """Write the model directory aside, then rename it into place (complete or absent)."""
    temp = model_dir.with_name(f".{model_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    # A fresh functional wrapper is not compiled, so the file holds no optimizer state.
    keras.Model(model.input, model.output, name=model.name).save(temp / "model.keras")
    write_history_csv(history, temp / "history.csv")
    write_atomically(temp / "train_metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    lines: list[str] = []
    model.summary(print_fn=lambda line, *_, **__: lines.append(line), expand_nested=True)
    (temp / "model_summary.txt").write_text("\n".join(lines) + "\n")
    plot_learning_curves(history, temp / "learning_curves.png", title=experiment.name)
    old = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}")
    if model_dir.exists():
        os.replace(model_dir, old)
    os.replace(temp, model_dir)
    shutil.rmtree(old, ignore_errors=True)


def plot_learning_curves(history: list[dict], path: pathlib.Path, title: str) -> None:
    """Loss and accuracy per epoch, train and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(epochs, [r.get(key) for r in history], label=f"train {key}")
        axis.plot(epochs, [r.get(f"val_{key}") for r in history], label=f"validation {key}")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
