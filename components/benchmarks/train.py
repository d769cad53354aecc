"""``bench train``: training images/s of our stage against plain Keras ``fit`` on NumPy arrays
and against the compute ceiling, and what ``train.deterministic`` costs.

Stage (``--stage``, on by default): the train stage itself (``python -m pipeline.train``, in
a subprocess, tracked by MLflow into a scratch store, every callback and the validation
of each epoch) on a synthetic data set of the dataset's shape and size (``--stage-images``,
by default as many as the prepared data set's train and validation splits, so an epoch is as
long as a real one: at 6,400 images LeNet-5's epoch is 50 steps, half a second, and the
epoch's fixed costs weigh 10-20%), prepared by the real prepare stage, ``--stage-epochs``
epochs; its steady images/s is what the stage records (``images_per_s`` of
``train_metrics.json``: the median training pass after the first epoch, which traces);
its best epoch after the first is the stage's side of ``best_epoch_ratio_to_ceiling``.
``--stage-runs N`` runs the stage N times, each followed at once by the ceiling's
``--repeats`` timings, so each run is set against the ceiling as the machine ran just then
(on this 2-core machine the ceiling alone moves 12% between runs); the ratios are the
median over the runs, and ``stage_runs`` lists each run's.
Ceiling: the same model, batch and compiled step on one
batch of tensors already resident, no input pipeline, no callbacks (TensorFlow: the
model's ``train_step`` in a ``tf.function``, as Keras compiles it, called
``steps_per_call`` times in each call of one compiled function, as
``train.steps_per_execution`` has the stage run it; JAX: ``fit`` on the same resident
arrays every step). After a stage run the ceiling is timed in windows as long as one of
the run's epochs (its steps per epoch, to the nearest multiple of ``steps_per_call``), so
each side's figure is a rate over the same span of time. Each side is then taken the same way:
``ratio_to_ceiling`` is the stage's steady rate (its median epoch) over the ceiling's
median window, ``best_epoch_ratio_to_ceiling`` its best epoch over the ceiling's best
window (best against best, as every other figure here: on a noisy machine each side's best
is its least disturbed), and ``ratio_to_best_ceiling`` the strictest pairing, the steady
rate over the best window.

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

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--experiment", default=None,
                        help="take data set, model, recipe, overrides and model hyperparameters from this "
                             "experiment of params.yaml (e.g. cifar10-airbench) instead of the three below")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--recipe", default="fast_onecycle")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--input", choices=("tfdata", "device"), default="tfdata",
                        help="our input pipeline: tf.data (TensorFlow only) or device-resident")
    parser.add_argument("--stage", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the train stage itself for ratio_to_ceiling (minutes)")
    parser.add_argument("--stage-images", type=int, default=None,
                        help="synthetic training-set size for the stage run (a tenth is carved for validation); "
                             "default: the prepared data set's train + validation examples")
    parser.add_argument("--stage-epochs", type=int, default=3, help="epochs of the stage run (the first traces)")
    parser.add_argument("--stage-runs", type=int, default=1,
                        help="stage runs, each followed by the ceiling's timings; ratios are their median")


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


def _bench_entry(args, params: dict) -> dict:
    """The experiment entry the benchmark trains: ``--experiment``'s (any set), or one made
    of ``--dataset``, ``--model`` and ``--recipe``, which it sets from the experiment's."""
    if args.experiment:
        from components.experiments import resolve

        entry = dict(resolve(args.experiment, params).entry)
        args.dataset, args.model, args.recipe = entry["dataset"], entry["model"], entry["recipe"]
        return entry
    return {"dataset": args.dataset, "model": args.model, "recipe": args.recipe}


def _stage_run(args, params: dict, backend: str, entry: dict, images: int, inputs) -> dict:
    """The train stage on a synthetic data set of ``args.dataset``'s shape and ``images`` examples:
    its recorded steady images/s, per-epoch rates and wall time, and its training images and
    steps per epoch (batches of ``inputs``, as the trainer counts them). Runs alone: nothing
    else of the benchmark runs beside it."""
    import yaml

    from components.data.prepare import PrepareConfig, SyntheticConfig, prepare_dataset
    from components.inputs.shards import num_examples, steps_per_epoch

    repo = pathlib.Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="bench-train-stage-") as scratch:
        root = pathlib.Path(scratch)
        config = PrepareConfig(source="synthetic", direct_running_mode="in_memory", direct_num_workers=1,
                               synthetic=SyntheticConfig(train_examples=images,
                                                         test_examples=max(images // 10, 100)))
        info = prepare_dataset(args.dataset, config, raw_dir=str(root / "raw"),
                               out_dir=str(root / "data" / args.dataset), log=lambda *_: None)
        stage_params = {**params, "prepare": {**params.get("prepare", {}), "out_root": str(root / "data")},
                        "train": {**params.get("train", {}), "models_dir": str(root / "models"),
                                  "checkpoints_dir": str(root / "checkpoints"),
                                  "input": {**params.get("train", {}).get("input", {}), "pipeline": args.input}},
                        "experiments": {"bench": {**entry, "overrides": {**entry.get("overrides", {}),
                                                                         "epochs": args.stage_epochs, "steps": None}}}}
        (root / "params.yaml").write_text(yaml.safe_dump(stage_params))
        env = {**os.environ, "KERAS_BACKEND": backend, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pipeline.train", "--experiment", "bench", "--params",
                                 str(root / "params.yaml")], cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"bench train: the stage run failed ({result.returncode}):\n{result.stderr[-3000:]}")
        metrics = json.loads((root / "models" / "bench" / "train_metrics.json").read_text())
        with open(root / "models" / "bench" / "history.csv") as handle:
            epochs = [float(row["images_per_s"]) for row in csv.DictReader(handle)]
    return {"images_per_s": metrics["images_per_s"], "epoch_images_per_s": [round(v, 1) for v in epochs],
            "wall_s": round(wall, 1), "images": images, "train_images": num_examples(info, "train"),
            "steps_per_epoch": steps_per_epoch(info, "train", inputs.batch_size, inputs.drop_remainder)}


def _epoch_window(steps_per_epoch: int, per_call: int) -> int:
    """Ceiling steps timed against a stage run: one of its epochs, to the nearest whole number
    of compiled calls (at least one)."""
    return per_call * max(1, round(steps_per_epoch / per_call))


def _best_epoch(stage: dict) -> float:
    """The stage run's best epoch after the first (which traces), images/s; the first if it ran one."""
    return max(stage["epoch_images_per_s"][1:] or stage["epoch_images_per_s"])


def _median_of(runs: list[dict], key: str) -> float | None:
    """The median of ``key`` over ``runs``, rounded as the runs' figures; None without runs."""
    return round(statistics.median(run[key] for run in runs), 3) if runs else None


def _ceiling(model, x, y, backend: str, per_call: int = 1):
    """A function ``timed(steps) -> seconds`` running ``steps`` compiled train steps of
    ``model`` on the resident tensors ``(x, y)``, and nothing else: ``per_call`` steps in
    each call of one compiled function (``steps`` a multiple of it), as the stage runs them."""
    if backend == "tensorflow":
        import tensorflow as tf

        data = (tf.constant(x), tf.constant(y))
        # Keras' own step, compiled as Keras compiles it (its one_step_on_data), per_call times a call
        step = tf.function(model.train_step, jit_compile=model.jit_compile, reduce_retracing=True)

        @tf.function
        def steps_of_one_call():
            logs = step(data)
            for _ in tf.range(per_call - 1):
                logs = step(data)
            return logs

        def timed(steps: int) -> float:
            started = time.perf_counter()
            for _ in range(steps // per_call):
                logs = steps_of_one_call()
            float(logs["loss"])  # wait for the last step
            return time.perf_counter() - started

        return timed
    import keras

    resident = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))

    class Resident(keras.utils.PyDataset):
        def __len__(self):
            return 1 << 30

        def __getitem__(self, index):
            return resident

    stream = Resident()
    return lambda steps: _timed_fit(model, stream, steps)


def run(args) -> dict:
    from components.backend import activate_backend, resolve_backend

    backend = activate_backend(resolve_backend(None, "KERAS_BACKEND"))
    if backend != "tensorflow" and args.input == "tfdata":
        raise SystemExit(f"bench train: --input tfdata needs the TensorFlow backend (KERAS_BACKEND is {backend!r})")

    import keras

    from components.backend import cpu_has_bfloat16, device_kind, has_accelerator
    from components.config import from_dict, load_params
    from components.inputs.arrays import read_split
    from components.inputs.config import one_hot_labels
    from components.inputs.shards import check_prepared, num_examples
    from components.models import create_model
    from components.training.config import Experiment, TrainSettings, resolve_experiment
    from components.training.blocks import use_block_train_function
    from components.training.inputs import build_training_inputs, execution_blocks, execution_steps
    from components.training.schedules import build_optimizer
    from components.training.trainer import build_training_model, input_config, loss_and_accuracy, precision_policy

    params = load_params(args.params)
    entry = _bench_entry(args, params)
    params = {**params, "experiments": {"bench": entry}}
    experiment: Experiment = resolve_experiment("bench", params)
    data_dir = experiment.paths.data
    info = check_prepared(data_dir, ("train", "validation"), mode="counts" if args.input == "tfdata" else "none")
    settings = from_dict(TrainSettings, params.get("train"), where="train")
    settings = dataclasses.replace(settings, input={**settings.input, "pipeline": args.input})
    # The stage's arithmetic (train.mixed_precision resolved as the trainer resolves it), so the
    # ceiling and the fits below compute in the same precision as the stage run.
    policy = precision_policy(settings.mixed_precision, has_accelerator(), experiment.model, cpu_has_bfloat16())
    keras.mixed_precision.set_global_policy(policy)
    recipe = experiment.recipe
    inputs = input_config(experiment, settings, backend)
    batch = recipe.batch_size

    # Ours and the ceiling run the stage's steps per compiled call (train.steps_per_execution),
    # on an endless stream cut into fits of args.steps steps: a divisor of args.steps.
    per_call = execution_steps(settings.steps_per_execution, args.steps, one_pass=False)
    # ours as the stage trains: one input block per call where the stage takes them
    block = execution_blocks(inputs, per_call, distributed=False) if args.input == "tfdata" else 0

    def compiled(model, steps_per_execution: int = per_call):
        loss, accuracy = loss_and_accuracy(recipe, inputs)
        model.compile(optimizer=build_optimizer(recipe.optimizer, 0.01), loss=loss, metrics=[accuracy],
                      jit_compile=backend == "jax",  # as the trainer: JAX always compiles
                      steps_per_execution=steps_per_execution)
        return model

    def ours_pipeline(config):
        per_epoch = max(args.steps, 3)  # an endless stream either way; the epoch length only sets its cut
        return build_training_inputs(data_dir, info, dataclasses.replace(config, repeat=True), per_epoch, 0,
                                     block=block).train

    def ours_compiled(config):
        model = compiled(build_training_model(experiment, info, config))
        if block:
            use_block_train_function(model)
        return model

    measure_determinism = backend == "tensorflow"
    keras.utils.set_random_seed(recipe.seed)
    ours_model = ours_compiled(inputs)
    ours_data = ours_pipeline(inputs)
    if measure_determinism:
        deterministic_inputs = input_config(experiment, dataclasses.replace(settings, deterministic=True), backend)
        keras.utils.set_random_seed(recipe.seed)
        deterministic_model = ours_compiled(deterministic_inputs)
        deterministic_data = ours_pipeline(deterministic_inputs)

    # The baseline's arrays: the same training images, normalised once, in memory.
    images, labels = read_split(data_dir, "train", info)
    kept = max(args.steps, 10) * 2 * batch
    mean, std = (np.asarray(info["train_statistics"][k], np.float32) for k in ("mean", "std"))
    x = (images[:kept].astype(np.float32) - mean) / std
    # the labels the recipe's loss takes: one-hot rows when it smooths labels
    y = np.eye(info["num_classes"], dtype=np.float32)[labels[:kept]] if one_hot_labels(inputs) else labels[:kept]
    baseline_model = compiled(create_model(args.model, tuple(info["image_shape"]), info["num_classes"],
                                           **entry.get("model_hparams", {})), steps_per_execution=1)  # tutorials'
    # The ceiling: one batch exactly as the stage's input yields it (dtype, labels), kept resident.
    keras.utils.set_random_seed(recipe.seed)
    ceiling_model = compiled(build_training_model(experiment, info, inputs))
    first = next(iter(ours_data)) if args.input == "tfdata" else ours_data[0]
    resident = [keras.ops.convert_to_numpy(part[0] if block else part) for part in first[:2]]
    ceiling = _ceiling(ceiling_model, *resident, backend, per_call)
    # The same with one step per call (what the stage ran before train.steps_per_execution)
    # (on JAX the ceiling is fit, which runs the model's own steps per call: a model compiled with one)
    per_step_model = (ceiling_model if backend == "tensorflow" or per_call == 1 else
                      compiled(build_training_model(experiment, info, inputs), steps_per_execution=1))
    per_step_ceiling = _ceiling(per_step_model, *resident, backend) if per_call > 1 else None

    warm_up = per_call * -(-3 // per_call)  # tracing and first batches: whole calls, 3 steps or more
    _timed_fit(ours_model, ours_data, warm_up)
    ceiling(warm_up)
    if per_step_ceiling:
        per_step_ceiling(warm_up)
    baseline_model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=3, verbose=0)
    if measure_determinism:
        with _op_determinism():
            _timed_fit(deterministic_model, deterministic_data, warm_up)
    images_timed = args.steps * batch

    # The stage runs, each alone on the machine (nothing else of the benchmark runs beside it),
    # each followed at once by the ceiling. By default as many images as the real data set:
    # its train and validation splits.
    stage_images = (args.stage_images if args.stage_images is not None
                    else num_examples(info, "train") + num_examples(info, "validation"))
    stage_runs = []
    for _ in range(args.stage_runs if args.stage else 0):
        stage = _stage_run(args, params, backend, entry, stage_images, inputs)
        window = _epoch_window(stage["steps_per_epoch"], per_call)
        rates = [window * batch / ceiling(window) for _ in range(args.repeats)]
        steady, best = statistics.median(rates), max(rates)
        stage_runs.append({**stage, "ceiling_steps": window, "ceiling_images_per_s": round(best, 1),
                           "ceiling_median_images_per_s": round(steady, 1),
                           "ratio_to_ceiling": round(stage["images_per_s"] / steady, 3),
                           "best_epoch_ratio_to_ceiling": round(_best_epoch(stage) / best, 3),
                           "ratio_to_best_ceiling": round(stage["images_per_s"] / best, 3)})
        print(f"[bench train] stage run {len(stage_runs)}/{args.stage_runs}: {json.dumps(stage_runs[-1])}",
              file=sys.stderr, flush=True)

    ours_times, baseline_times, deterministic_times, ceiling_times, per_step_times = [], [], [], [], []
    for _ in range(args.repeats):
        ceiling_times.append(ceiling(args.steps))
        if per_step_ceiling:
            per_step_times.append(per_step_ceiling(args.steps))
        ours_times.append(_timed_fit(ours_model, ours_data, args.steps))
        started = time.perf_counter()
        baseline_model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=True)
        baseline_times.append(time.perf_counter() - started)
        if measure_determinism:
            with _op_determinism():
                deterministic_times.append(_timed_fit(deterministic_model, deterministic_data, args.steps))
    ours, baseline = images_timed / min(ours_times), images_timed / min(baseline_times)
    deterministic = images_timed / min(deterministic_times) if deterministic_times else None
    ceiling_rate = images_timed / min(ceiling_times)
    per_step_rate = images_timed / min(per_step_times) if per_step_times else ceiling_rate
    stage_rate = _median_of(stage_runs, "images_per_s")
    return {
        "benchmark": "train", "experiment": args.experiment, "dataset": args.dataset, "model": args.model,
        "recipe": args.recipe, "batch_size": batch,
        "augment": list(inputs.augment), "backend": backend, "input": args.input, "device": device_kind(),
        "precision": policy, "steps_per_call": per_call,
        "ours_images_per_s": round(ours, 1), "keras_numpy_fit_images_per_s": round(baseline, 1),
        "ratio": round(ours / baseline, 3), "target_ratio_min": 1.0,
        # train.deterministic: true against ours (false): the speed it costs (TensorFlow only).
        "deterministic_images_per_s": round(deterministic, 1) if deterministic else None,
        "deterministic_ratio": round(deterministic / ours, 3) if deterministic else None,
        # The compute ceiling: the compiled step on resident tensors. ours_to_ceiling: fit with our
        # input, no callbacks or validation; ratio_to_ceiling: the train stage's recorded steady rate.
        "ceiling_images_per_s": round(ceiling_rate, 1), "ours_to_ceiling": round(ours / ceiling_rate, 3),
        # the stage: the median over its runs, each run against the ceiling timed right after it,
        # in windows as long as one of its epochs (steady against steady, best against best)
        "stage_images_per_s": stage_rate,
        "stage_images": stage_images if stage_runs else None,
        "ratio_to_ceiling": _median_of(stage_runs, "ratio_to_ceiling"),
        "best_epoch_ratio_to_ceiling": _median_of(stage_runs, "best_epoch_ratio_to_ceiling"),
        "ratio_to_best_ceiling": _median_of(stage_runs, "ratio_to_best_ceiling"),
        "target_ratio_to_ceiling_min": 0.95,
        "stage_runs": stage_runs,
        # The compiled step called once per step from Python: the ceiling of a stage without
        # steps_per_execution (the figures before it), and the stage against it.
        "ceiling_one_step_per_call_images_per_s": round(per_step_rate, 1),
        "ratio_to_one_step_per_call_ceiling": round(stage_rate / per_step_rate, 3) if stage_runs else None,
        "steps_timed": args.steps, "repeats": args.repeats,
    }
