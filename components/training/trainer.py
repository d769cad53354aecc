"""Train one experiment: data from the prepared TFRecords, a model from the zoo, a recipe.

:func:`train_experiment` is the library entry point (``pipeline/train.py`` calls it and
adds MLflow through ``callbacks``). It

* checks the prepared data and every setting before the first step;
* runs on the Keras backend the stage activated (``train.backend``: TensorFlow, with
  tf.data or the device-resident input, or JAX, which needs no TensorFlow at all; see
  :mod:`components.backend` and :mod:`components.training.inputs`);
* trains on one device, under a ``tf.distribute`` strategy on one host (TensorFlow), or
  as one of several worker processes (JAX, ``keras.distribution``: each worker reads its
  own train shards, all hold the same weights; :mod:`components.training.distribute`);
* picks mixed precision (float16 or bfloat16) and XLA (on
  where they help: with a GPU, and always on JAX), and with ``train.deterministic``
  makes the run repeatable bit for bit;
* resumes from ``<checkpoints_dir>/<experiment>/`` when a previous run was interrupted
  (same command, continues after its last completed epoch with the optimizer state, the
  schedule's step and the data order where they were, same total epochs);
* keeps the best weights on validation accuracy and exports them, with normalisation
  built in, as ``<models_dir>/<experiment>/model.keras`` taking raw uint8 images;
* writes ``history.csv``, ``train_metrics.json``, ``learning_curves.png`` and
  ``model_summary.txt`` beside it. The model directory is assembled aside, completed
  (the caller's ``before_publish`` adds its records there), and swapped into place as
  the last step, so it is the previous complete one or the new complete one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import statistics
import time
from typing import Callable, Sequence

import keras
import numpy as np

from components import backend as backends
from components.compat import outside_distribution, set_random_seed
from components.config import from_dict, to_dict
from components.data.errors import DataError
from components.inputs.config import InputConfig, one_hot_labels
from components.inputs.normalization import normalization_layer
from components.inputs.shards import check_prepared, steps_per_epoch
from components.models import create_model, model_info
from components.training.blocks import use_block_train_function
from components.training.callbacks import (STATE_FILE, Checkpoint, CheckpointError, Checkpointer, EpochTimer,
                                           ProgressLine, WorkerSync, kill_point, latest_checkpoint, replace_directory,
                                           write_atomically, write_history_csv)
from components.training.config import Experiment, RecipeConfig, TrainSettings
from components.training.distribute import (Cluster, barrier, check_shared_directory, cluster_from_env,
                                            distribution_mode, gather, is_default_strategy, local_batch_size,
                                            make_strategy, start_workers, worker_shards, worker_steps_per_epoch)
from components.training.inputs import build_training_inputs, execution_blocks, execution_steps, one_pass_per_iteration
from components.training.schedules import build_optimizer, build_schedule, plateau_callback


class TrainingError(RuntimeError):
    """A setting, data set or checkpoint that makes training impossible; raised before any step."""


@dataclasses.dataclass
class TrainResult:
    experiment: str
    model_dir: pathlib.Path
    history: list[dict]
    metrics: dict


def input_config(experiment: Experiment, settings: TrainSettings, backend: str | None = None) -> InputConfig:
    """The input pipeline's effective config: what the trainer builds its data sets with,
    the checkpoint fingerprint holds and MLflow logs.

    The stage's shared knobs plus the recipe's batch, augmentation and seed, and what the
    recipe and settings imply: one-hot labels when the recipe smooths labels (its loss
    needs rows), a deterministic order with ``train.deterministic``, and ``pipeline``
    resolved for ``backend`` (default: the running one): ``auto`` is tf.data on
    TensorFlow, the device-resident input on JAX.
    """
    recipe = experiment.recipe
    merged = {**settings.input, "batch_size": recipe.batch_size, "augment": list(recipe.augment), "seed": recipe.seed}
    inputs = from_dict(InputConfig, merged, where=f"train.input (+ recipe {experiment.recipe_name})")
    if recipe.label_smoothing > 0 and not one_hot_labels(inputs):
        inputs = dataclasses.replace(inputs, labels="one_hot")
    if settings.deterministic and not inputs.deterministic:
        inputs = dataclasses.replace(inputs, deterministic=True)
    if inputs.pipeline == "auto":
        backend = backend or backends.current_backend()
        inputs = dataclasses.replace(inputs, pipeline="tfdata" if backend == "tensorflow" else "device")
    return inputs


def check_backend_settings(experiment: Experiment, settings: TrainSettings, inputs: InputConfig, backend: str) -> None:
    """Settings the backend cannot honour, as a TrainingError naming the setting, before any step."""
    if backend == "tensorflow":
        return
    if inputs.pipeline == "tfdata":
        raise TrainingError(f"train.input.pipeline: 'tfdata' feeds the TensorFlow backend; backend {backend!r} "
                            "reads its data with pipeline 'device' (or 'auto')")
    if inputs.data_service is not None:
        raise TrainingError(f"train.input.data_service: the tf.data service feeds the TensorFlow backend; backend "
                            f"{backend!r} keeps the split in device memory (set it to null)")


def precision_policy(setting: str, accelerator: bool, model: str, cpu_bfloat16: bool = False) -> str:
    """The Keras dtype policy for ``train.mixed_precision``: float32, mixed_float16 or mixed_bfloat16.

    ``auto``: with an accelerator float16, bfloat16 for the models float16 cannot take
    (:func:`components.models.float16_unsafe_reason`); on a CPU bfloat16 where it computes
    bfloat16 in hardware (``cpu_bfloat16``, :func:`components.backend.cpu_has_bfloat16`; on
    this project's 2-core AMD EPYC the CIFAR-10 default trains 1.38x as fast as in float32,
    test accuracy within run-to-run noise: README, "What `dvc repro` runs"), else float32.
    Asking for float16 for such a model is an error naming the reason.
    """
    from components.models import float16_unsafe_reason

    reason = float16_unsafe_reason(model)
    if setting == "auto" and accelerator:
        dtype = "bfloat16" if reason else "float16"
    elif setting == "auto":
        dtype = "bfloat16" if cpu_bfloat16 else None
    else:
        dtype = {"on": "float16", "off": None}.get(setting, setting)
    if dtype == "float16" and reason:
        raise TrainingError(f"train.mixed_precision: {setting!r} trains {model} in float16, which it cannot take: "
                            f"{reason}")
    return f"mixed_{dtype}" if dtype else "float32"


def loss_and_accuracy(recipe: RecipeConfig, inputs: InputConfig):
    """The loss (from logits) and accuracy metric for the labels ``inputs`` yields:
    categorical, with the recipe's label smoothing, for one-hot rows; sparse for class ids.
    Create them under the strategy's scope (the metric has variables)."""
    if one_hot_labels(inputs):
        return (keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
                keras.metrics.CategoricalAccuracy(name="accuracy"))
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True), keras.metrics.SparseCategoricalAccuracy(
        name="accuracy")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy, Keras and the backend; with ``deterministic`` also make the
    backend's kernels deterministic (process-wide: same inputs and hardware, same bits)."""
    set_random_seed(seed)  # keras.utils.set_random_seed, minus its TensorFlow import on JAX (components/compat.py)
    if deterministic:
        backends.enable_determinism()


def fingerprint(experiment: Experiment, inputs: InputConfig, backend: str | None = None, workers: int = 1) -> dict:
    """What a checkpoint must match to be resumed: the backend too (its kernels and its
    input pipeline's draws differ, so a run continued on the other one would be neither),
    and the number of workers when there are several (each draws from its own shards)."""
    wanted = {"dataset": experiment.dataset, "model": experiment.model, "model_hparams": experiment.model_hparams,
              "recipe": to_dict(experiment.recipe), "input": to_dict(inputs),
              "backend": backend or backends.current_backend()}
    return {**wanted, "workers": workers} if workers > 1 else wanted


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
    return keras.Model(raw, logits, name=f"{experiment.dataset}-{experiment.model}")


def train_experiment(experiment: Experiment, settings: TrainSettings, *, callbacks: Sequence[keras.callbacks.Callback] = (),
                     resume_state: Callable[[dict], None] | None = None, extra_state: dict | None = None,
                     before_publish: Callable[[pathlib.Path, dict], dict] | None = None,
                     log: Callable[[str], None] = print) -> TrainResult:
    """Train ``experiment`` to completion (resuming if a checkpoint matches) and publish it.

    ``resume_state`` is called with the checkpoint's saved state before training resumes
    (the MLflow edge uses it to continue the same run); ``extra_state`` is stored with
    every checkpoint. ``before_publish(staged_dir, metrics) -> metrics`` runs on the chief
    once the model directory is complete aside, before it is swapped into place; what it
    returns becomes ``train_metrics.json`` (the MLflow edge adds its run id and registered
    version there), and nothing writes to the directory once it is published.
    """
    backend = backends.current_backend()
    cluster = cluster_from_env()
    several = distribution_mode(settings.distribute, backend, cluster) == "multi_worker"
    if several:
        # First: the workers join before JAX runs anything (jax.distributed.initialize's rule).
        start_workers(cluster)
        log = _tagged(log, cluster.tag)
    strategy = make_strategy(settings.distribute) if backend == "tensorflow" else None
    recipe = experiment.recipe
    data_dir = experiment.paths.data
    inputs = input_config(experiment, settings, backend)
    check_backend_settings(experiment, settings, inputs, backend)
    # The device pipeline and the decoded cache check every record as they read the split
    # (components/inputs/arrays.py).
    verify = "none" if inputs.pipeline == "device" or inputs.cache == "decoded" else inputs.verify_shards
    try:
        info = check_prepared(data_dir, ("train", "validation"), mode=verify)
    except DataError as error:
        raise DataError(f"{error}\n(data set '{experiment.dataset}' not prepared? run "
                        f"`python -m pipeline.prepare --dataset {experiment.dataset}` or `dvc repro`)") from None
    accelerator = backends.has_accelerator()
    policy = precision_policy(settings.mixed_precision, accelerator, experiment.model, backends.cpu_has_bfloat16())
    # XLA: always on JAX (its compiler); on TensorFlow where it helps, with a GPU.
    jit = settings.jit_compile == "on" or (settings.jit_compile == "auto" and (accelerator or backend == "jax"))
    keras.mixed_precision.set_global_policy(policy)
    seed_everything(recipe.seed, settings.deterministic)

    if several:  # whole global batches only: each worker draws its local share from its own shards
        shard_examples = [int(shard["examples"]) for shard in info["splits"]["train"]["shards"]]
        local_batch = local_batch_size(recipe.batch_size, cluster)
        per_epoch = worker_steps_per_epoch(shard_examples, cluster, local_batch)
        mine = worker_shards(len(shard_examples), cluster)
        log(f"[train] worker {cluster.worker} of {cluster.num_workers}: train shards {mine} "
            f"({sum(shard_examples[i] for i in mine)} examples), {local_batch} of each global batch of "
            f"{recipe.batch_size}")
    else:
        per_epoch = steps_per_epoch(info, "train", recipe.batch_size, inputs.drop_remainder)
    if per_epoch < 1:
        raise TrainingError(f"batch_size {recipe.batch_size} is larger than the {info['splits']['train']['examples']} "
                            f"training examples of {experiment.dataset}")
    epochs = math.ceil(recipe.steps / per_epoch) if recipe.steps else recipe.epochs
    # A budget of fewer steps than one pass: one epoch of that many batches of the shuffled
    # split (the CPU budgets of the ImageNet-sized models, params.yaml zoo_cpu).
    per_epoch = min(per_epoch, recipe.steps) if recipe.steps else per_epoch
    replicas = (strategy.num_replicas_in_sync if strategy
                else len(keras.distribution.list_devices()) if several else 1)
    per_call = execution_steps(settings.steps_per_execution, per_epoch, one_pass_per_iteration(inputs))
    # one input element per call, and our train function taking it (components/training/blocks.py)
    block = execution_blocks(inputs, per_call, distributed=replicas > 1 or not is_default_strategy(strategy))
    log(f"[train] {experiment.name}: {experiment.model} on {experiment.dataset}, recipe {experiment.recipe_name}, "
        f"{epochs} epochs x {per_epoch} steps of {recipe.batch_size}, {replicas} replica(s), "
        + (f"{cluster.num_workers} workers (this is worker {cluster.worker}), " if several else "") +
        f"{'GPU' if accelerator else 'CPU'}, backend {backend}, input {inputs.pipeline}, precision {policy}, "
        f"XLA {'on' if jit else 'off'}, deterministic {'on' if settings.deterministic else 'off'}, "
        f"{per_call} step(s) per call" + (", one input block per call" if block else ""))

    checkpoint_dir = pathlib.Path(settings.checkpoints_dir) / experiment.name
    wanted = fingerprint(experiment, inputs, backend, cluster.num_workers)
    # The chief alone writes checkpoints (and sets a stale one aside); every worker resumes from them.
    checkpoint = load_checkpoint(checkpoint_dir, wanted, log) if cluster.is_chief else None
    if several:
        check_shared_directory(checkpoint_dir, cluster)
        if not cluster.is_chief:
            checkpoint = load_checkpoint(checkpoint_dir, wanted, log, read_only=True)
        agree_on_checkpoint(checkpoint, cluster)

    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_training_model(experiment, info, inputs)
        schedule = build_schedule(recipe.optimizer, recipe.schedule, per_epoch, epochs)
        optimizer = build_optimizer(recipe.optimizer, schedule, recipe.ema_decay)
        loss, accuracy = loss_and_accuracy(recipe, inputs)
        model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy], jit_compile=jit,
                      steps_per_execution=per_call)
        if block:
            use_block_train_function(model)
        if checkpoint:
            optimizer.build(model.trainable_variables)
            model.load_weights(str(checkpoint.weights))  # the optimizer's variables too: step, slots, average

    state = checkpoint.state if checkpoint else {}
    history = list(state.get("history", []))
    initial_epoch = state.get("completed_epochs", 0)
    data = build_training_inputs(data_dir, info, inputs, per_epoch, initial_epoch, cluster if several else Cluster(),
                                 block)
    if checkpoint:
        log(f"[train] resuming {experiment.name} after epoch {initial_epoch} of {epochs} at optimizer step "
            f"{int(optimizer.iterations.numpy())} from {checkpoint.path}")
        if resume_state:
            resume_state(state)
    checkpointer = Checkpointer(checkpoint_dir, wanted, history, state.get("best", -1.0), state.get("best_epoch"),
                                extra_state, write=cluster.is_chief)
    # Among several workers: each epoch's weights are compared across workers before they are checkpointed.
    sync = WorkerSync(weights_digest, gather, cluster.tag, TrainingError) if several else None
    all_callbacks = [EpochTimer(per_epoch * recipe.batch_size), plateau_callback(recipe.optimizer, recipe.schedule),
                     sync, checkpointer, ProgressLine(epochs, prefix=cluster.tag), *callbacks]
    started = time.perf_counter()
    if initial_epoch < epochs:
        # One pass of exactly per_epoch batches (a new pass each epoch), or an endless stream
        # cut into epochs (components/training/inputs.py): either way Keras never runs out of
        # data, so it never warns that it did. shuffle=False: the inputs shuffle themselves,
        # and Keras' shuffle applies to arrays only (for a data set it only warns).
        model.fit(data.train, steps_per_epoch=per_epoch, validation_data=data.validation, epochs=epochs,
                  initial_epoch=initial_epoch, callbacks=[c for c in all_callbacks if c is not None], verbose=0,
                  shuffle=False)
    elif recipe.ema_decay > 0:
        with strategy.scope() if strategy else contextlib.nullcontext():
            swap_in_moving_average(model)
    train_time = time.perf_counter() - started + sum(r.get("epoch_time_s", 0) for r in history[:initial_epoch])
    if several:
        barrier("trained")  # the chief's last checkpoint, with the best weights, is on disk for every worker

    selected, candidates = select_exported_weights(model, checkpointer.best_weights, recipe.ema_decay > 0,
                                                   data.validation, log)
    digest = weights_digest(model)
    metrics = {
        "experiment": experiment.name, "dataset": experiment.dataset, "model": experiment.model,
        "recipe": experiment.recipe_name, "epochs": epochs, "steps_per_epoch": per_epoch,
        "best_val_accuracy": max((r.get("val_accuracy", 0) for r in history), default=None),
        "final_val_accuracy": history[-1].get("val_accuracy") if history else None,
        "final_train_accuracy": history[-1].get("accuracy") if history else None,
        "best_epoch": checkpointer.best_epoch,
        "exported_weights": selected,
        "export_candidates": candidates,  # with EMA: each candidate's validation loss and accuracy
        "weights_sha256": digest,  # of the exported weights: equal digests, identical weights
        "train_time_s": round(train_time, 1),
        # The first epoch includes tracing and warm-up; the steady rate is what the others show.
        "images_per_s": round(statistics.median([r.get("images_per_s", 0) for r in history[1:] or history] or [0]), 1),
        "params": int(model.count_params()),
        "replicas": replicas, "backend": backend, "input_pipeline": inputs.pipeline,
        "mixed_precision": policy != "float32", "precision": policy, "jit_compile": jit,
        "steps_per_execution": per_call,
        "deterministic": settings.deterministic, "device": "GPU" if accelerator else "CPU",
        # Filled in by the MLflow edge (before_publish) when tracking is on.
        "mlflow_run_id": None, "registered_model_name": None, "registered_model_version": None,
    }
    model_dir = experiment.paths.model_dir
    if cluster.is_chief:
        with outside_distribution():  # the chief exports alone (components/compat.py, workaround 3)
            metrics = publish(model, experiment, history, metrics, model_dir, before_publish)
    if several:
        barrier("published")  # no worker reads the checkpoints any more
    if cluster.is_chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    log(f"[train] {experiment.name}: best val_accuracy {metrics['best_val_accuracy']:.4f}, "
        f"{metrics['train_time_s']:.0f} s, {metrics['images_per_s']:,.0f} img/s, weights sha256 {digest}"
        + (f" -> {model_dir}" if cluster.is_chief else ""))
    return TrainResult(experiment.name, model_dir, history, metrics)


def _tagged(log: Callable[[str], None], tag: str) -> Callable[[str], None]:
    """``log`` with each line's ``[train]`` prefix replaced by ``tag`` (``[train 1/2]``)."""
    return lambda line: log(line.replace("[train]", tag, 1))


def agree_on_checkpoint(checkpoint: Checkpoint | None, cluster: Cluster) -> None:
    """Check, across the workers, that all resume after the same epoch; a TrainingError on
    every worker otherwise (they would train different steps and block each other)."""
    completed = gather([checkpoint.state.get("completed_epochs", 0) if checkpoint else 0]).ravel().tolist()
    if len(set(completed)) > 1:
        raise TrainingError(f"the workers would resume after different epochs ({completed}, by worker); "
                            f"they must share train.checkpoints_dir")


def swap_in_moving_average(model: keras.Model) -> None:
    """Load the optimizer's moving average of the weights into the model, as ``fit`` does
    when it ends (``finalize_variable_values``). A run resumed after its last epoch was
    checkpointed does not call fit, so its restored average must be swapped in here."""
    model.optimizer.finalize_variable_values(model.trainable_variables)


def weights_digest(model: keras.Model) -> str:
    """sha256 over every weight array (dtype, shape, bytes) in order: equal digests, identical weights."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def resumable_run_id(experiment: Experiment, settings: TrainSettings) -> str | None:
    """The MLflow run of an interrupted training that this command would resume, if any."""
    try:
        checkpoint = latest_checkpoint(pathlib.Path(settings.checkpoints_dir) / experiment.name)
    except CheckpointError:
        return None
    wanted = fingerprint(experiment, input_config(experiment, settings), workers=cluster_from_env().num_workers)
    if checkpoint is None or checkpoint.state.get("fingerprint") != wanted:
        return None
    return checkpoint.state.get("mlflow_run_id")


def load_checkpoint(directory: pathlib.Path, wanted: dict, log, read_only: bool = False) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` if it resumes this experiment, else None.

    A checkpoint of another model or data set is an error (it would be silently lost
    otherwise); one of the same model with other settings, or in an older trainer's
    layout, is set aside, and training starts over. ``read_only`` (a worker other than
    the chief, which has set aside what it would not resume): such a checkpoint is an error.
    """
    if read_only:
        checkpoint = _latest(directory)
        if checkpoint is not None and checkpoint.state.get("fingerprint") != wanted:
            raise TrainingError(f"{checkpoint.path}: a checkpoint of other settings, which the chief did not resume; "
                                f"do all workers run the same command and params?")
        return checkpoint
    if (directory / STATE_FILE).exists():  # the layout before epoch directories
        _set_aside(directory, "the checkpoint in {directory} is in an older trainer's layout", log)
        return None
    checkpoint = _latest(directory)
    if checkpoint is None:
        return None
    saved = checkpoint.state.get("fingerprint") or {}
    for key in ("model", "dataset"):
        if saved.get(key) != wanted[key]:
            raise TrainingError(f"{directory}: checkpoint is of {key} {saved.get(key)!r}, this experiment trains "
                                f"{wanted[key]!r}; delete {directory} (or rename the experiment) to start over")
    if saved != wanted:
        _set_aside(directory, "settings changed since the checkpoint in {directory}", log)
        return None
    return checkpoint


def _latest(directory: pathlib.Path) -> Checkpoint | None:
    try:
        return latest_checkpoint(directory)
    except CheckpointError as error:
        raise TrainingError(f"{error}; delete {directory} to start over") from None


def _set_aside(directory: pathlib.Path, reason: str, log) -> None:
    stale = directory.with_name(f"{directory.name}.stale-{int(time.time())}")
    os.replace(directory, stale)
    log(f"[train] {reason.format(directory=directory)}; starting over (old one kept in {stale})")


def select_exported_weights(model: keras.Model, best_weights: pathlib.Path | None, has_ema: bool, validation_data,
                            log) -> tuple[str, dict | None]:
    """Load the weights to export: the best epoch on validation accuracy, or the weight
    average when it does better on validation. Returns which was chosen and, with
    ``has_ema``, both candidates' validation loss and accuracy (the grounds of the choice).

    With ``has_ema`` the model holds the moving average on entry (``fit`` swaps it in
    when it ends; :func:`swap_in_moving_average` when fit did not run).
    """
    if not has_ema:
        if best_weights is not None:
            model.load_weights(str(best_weights))
        return "best_epoch", None
    candidates = {"ema": _validation_figures(model, validation_data)}
    ema_weights = model.get_weights()
    if best_weights is not None:
        model.load_weights(str(best_weights))
        candidates["best_epoch"] = _validation_figures(model, validation_data)
        best_accuracy, ema_accuracy = candidates["best_epoch"]["val_accuracy"], candidates["ema"]["val_accuracy"]
        if best_accuracy >= ema_accuracy:
            log(f"[train] exporting the best epoch (val_acc {best_accuracy:.4f} >= EMA {ema_accuracy:.4f})")
            return "best_epoch", candidates
    model.set_weights(ema_weights)
    log(f"[train] exporting the EMA weights (val_acc {candidates['ema']['val_accuracy']:.4f})")
    return "ema", candidates


def _validation_figures(model: keras.Model, validation_data) -> dict:
    figures = model.evaluate(validation_data, verbose=0, return_dict=True)
    return {"val_loss": float(figures["loss"]), "val_accuracy": float(figures["accuracy"])}


def metrics_json(metrics: dict) -> bytes:
    """``train_metrics.json``'s bytes (MLflow logs the same bytes as the run's artifact)."""
    return (json.dumps(metrics, indent=2) + "\n").encode()


def publish(model: keras.Model, experiment: Experiment, history: list[dict], metrics: dict, model_dir: pathlib.Path,
            before_publish: Callable[[pathlib.Path, dict], dict] | None = None) -> dict:
    """Assemble the model directory aside, let ``before_publish`` complete the metrics, write
    them, and swap the directory into place: the last step, so ``model_dir`` is always a
    complete directory, the previous or the new one. Returns the metrics written."""
    staged = model_dir.with_name(f".{model_dir.name}.staged")
    shutil.rmtree(staged, ignore_errors=True)  # a killed run's leftover
    staged.mkdir(parents=True)
    write_model_files(model, experiment, history, staged)
    if before_publish is not None:
        metrics = before_publish(staged, dict(metrics))
    write_atomically(staged / "train_metrics.json", metrics_json(metrics))
    kill_point("model-staged")
    replace_directory(staged, model_dir)
    return metrics


def write_model_files(model: keras.Model, experiment: Experiment, history: list[dict], directory: pathlib.Path) -> None:
    """``model.keras``, ``history.csv``, ``model_summary.txt`` and ``learning_curves.png`` into ``directory``."""
    # A fresh functional wrapper is not compiled, so the file holds no optimizer state.
    keras.Model(model.input, model.output, name=model.name).save(directory / "model.keras")
    write_history_csv(history, directory / "history.csv")
    lines: list[str] = []
    model.summary(print_fn=lambda line, *_, **__: lines.append(line), expand_nested=True)
    (directory / "model_summary.txt").write_text("\n".join(lines) + "\n")
    plot_learning_curves(history, directory / "learning_curves.png", title=experiment.name)


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
