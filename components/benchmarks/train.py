"""``bench train``: training images/s of our stage against plain Keras ``fit`` on NumPy arrays,
and what ``train.deterministic`` costs.

Ours: the stage's own pieces: the input pipeline (``--input tfdata``: tf.data over the
prepared TFRecords; ``--input device``: the split in memory, batches drawn and augmented
by compiled backend ops, :mod:`components.inputs.device`), with the experiment's
augmentation, the model with its normalisation layer, the recipe's optimizer and loss,
compiled as the trainer compiles it, on the backend ``KERAS_BACKEND`` names (TensorFlow
by default; JAX takes ``--input device`` only). Baseline: the tutorials' way,
the same zoo model fed normalised float32 arrays from memory with ``model.fit(x, y)``.
Deterministic: ours again, as ``train.deterministic: true`` trains (op determinism on,
the input order deterministic). All are warmed up (tracing excluded), then timed over
the same number of steps, alternately, several times; the best of each counts. Op
determinism is process-wide, so it is switched on only around the deterministic
model's calls (its warm-up included, so its kernels are made in that mode); on JAX,
whose CPU kernels are deterministic already, it is not measured.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--recipe", default="fast_onecycle")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--input", choices=("tfdata", "device"), default="tfdata",
                        help="our input pipeline: tf.data (TensorFlow only) or device-resident")


def _timed_fit(model, data, steps: int, **fit_args) -> float:
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, **fit_args)
    return time.perf_counter() - started


@contextlib.contextmanager
def _op_determinism():
    """TensorFlow's op determinism on for the block (the public API can only switch it on)."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not exported

    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        tf_config.disable_op_determinism()


def run(args) -> dict:
    from components.backend import activate_backend, resolve_backend

    backend = activate_backend(resolve_backend(None, "KERAS_BACKEND"))
    if backend != "tensorflow" and args.input == "tfdata":
        raise SystemExit(f"bench train: --input tfdata needs the TensorFlow backend (KERAS_BACKEND is {backend!r})")

    import keras

    from components.backend import device_kind
    from components.config import from_dict, load_params
    from components.inputs.arrays import read_split
    from components.inputs.config import one_hot_labels
    from components.inputs.shards import check_prepared
    from components.models import create_model
    from components.training.config import Experiment, TrainSettings, resolve_experiment
    from components.training.inputs import build_training_inputs
    from components.training.schedules import build_optimizer
    from components.training.trainer import build_training_model, input_config, loss_and_accuracy

    params = load_params(args.params)
    params = {**params, "experiments": {"bench": {"dataset": args.dataset, "model": args.model, "recipe": args.recipe}}}
    experiment: Experiment = resolve_experiment("bench", params)
    settings = from_dict(TrainSettings, params.get("train"), where="train")
    settings = dataclasses.replace(settings, input={**settings.input, "pipeline": args.input})
    recipe = experiment.recipe
    inputs = input_config(experiment, settings, backend)
    data_dir = experiment.paths.data
    batch = recipe.batch_size
    info = check_prepared(data_dir, ("train", "validation"), mode="counts" if args.input == "tfdata" else "none")

    def compiled(model):
        loss, accuracy = loss_and_accuracy(recipe, inputs)
        model.compile(optimizer=build_optimizer(recipe.optimizer, 0.01), loss=loss, metrics=[accuracy],
                      jit_compile=backend == "jax")  # as the trainer: JAX always compiles
        return model

    def ours_pipeline(config):
        per_epoch = max(args.steps, 3)  # an endless stream either way; the epoch length only sets its cut
        return build_training_inputs(data_dir, info, dataclasses.replace(config, repeat=True), per_epoch, 0).train

    measure_determinism = backend == "tensorflow"
    keras.utils.set_random_seed(recipe.seed)
    ours_model = compiled(build_training_model(experiment, info, inputs))
    ours_data = ours_pipeline(inputs)
    if measure_determinism:
        deterministic_inputs = input_config(experiment, dataclasses.replace(settings, deterministic=True), backend)
        keras.utils.set_random_seed(recipe.seed)
        deterministic_model = compiled(build_training_model(experiment, info, deterministic_inputs))
        deterministic_data = ours_pipeline(deterministic_inputs)

    # The baseline's arrays: the same training images, normalised once, in memory.
    images, labels = read_split(data_dir, "train", info)
    kept = max(args.steps, 10) * 2 * batch
    mean, std = (np.asarray(info["train_statistics"][k], np.float32) for k in ("mean", "std"))
    x = (images[:kept].astype(np.float32) - mean) / std
    # the labels the recipe's loss takes: one-hot rows when it smooths labels
    y = np.eye(info["num_classes"], dtype=np.float32)[labels[:kept]] if one_hot_labels(inputs) else labels[:kept]
    baseline_model = compiled(create_model(args.model, tuple(info["image_shape"]), info["num_classes"]))

    _timed_fit(ours_model, ours_data, 3)  # warm-up: tracing and first batches
    baseline_model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=3, verbose=0)
    if measure_determinism:
        with _op_determinism():
            _timed_fit(deterministic_model, deterministic_data, 3)
    ours_times, baseline_times, deterministic_times = [], [], []
    for _ in range(args.repeats):
        ours_times.append(_timed_fit(ours_model, ours_data, args.steps))
        started = time.perf_counter()
        baseline_model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=True)
        baseline_times.append(time.perf_counter() - started)
        if measure_determinism:
            with _op_determinism():
                deterministic_times.append(_timed_fit(deterministic_model, deterministic_data, args.steps))
    images_timed = args.steps * batch
    ours, baseline = images_timed / min(ours_times), images_timed / min(baseline_times)
    deterministic = images_timed / min(deterministic_times) if deterministic_times else None
    return {
        "benchmark": "train", "dataset": args.dataset, "model": args.model, "batch_size": batch,
        "augment": list(inputs.augment), "backend": backend, "input": args.input, "device": device_kind(),
        "ours_images_per_s": round(ours, 1), "keras_numpy_fit_images_per_s": round(baseline, 1),
        "ratio": round(ours / baseline, 3), "target_ratio_min": 1.0,
        # train.deterministic: true against ours (false): the speed it costs (TensorFlow only).
        "deterministic_images_per_s": round(deterministic, 1) if deterministic else None,
        "deterministic_ratio": round(deterministic / ours, 3) if deterministic else None,
        "steps_timed": args.steps, "repeats": args.repeats,
    }
