"""The Keras backends: TensorFlow (default) and JAX, one contract for both.

* The JAX path needs no TensorFlow: the whole train stage (zoo, trainer, recipes, the
  TF-free reader, the device-resident input, MLflow) runs in processes where
  ``import tensorflow`` raises.
* JAX trains, is killed, resumes, and ends exactly where an uninterrupted run ends.
* A model exported on either backend scores the same on both (evaluate's own loader and
  predict function), in float32 and in mixed float16 / bfloat16 with XLA.
* Bad settings (unknown or missing backend, options the backend cannot honour) fail
  before any step, naming the setting.

The stage runs are subprocesses (a process's Keras backend is fixed once Keras loads),
on the small synthetic CIFAR-shaped set of ``tests/test_training.py``.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from components.backend import BackendError, resolve_backend
from tests.conftest import NO_TENSORFLOW
from tests.test_training import killed_at, read_history, steps_per_epoch, write_params

BLOCK_TF = NO_TENSORFLOW  # first in a subprocess's code: TensorFlow cannot be imported there


def run_module(module: str, args: list[str], cwd: pathlib.Path, backend: str, env=None, block_tf: bool = False):
    """``python -m module args`` on ``backend``; with ``block_tf`` TensorFlow cannot be imported."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend, **(env or {})}
    code = (BLOCK_TF if block_tf else "") + (
        f"import runpy; sys.argv = [{module!r}, *{args!r}]; runpy.run_module({module!r}, run_name='__main__')")
    if not block_tf:
        code = "import sys\n" + code
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=environment,
                          timeout=600)


def train(root: pathlib.Path, backend: str, *args, env=None, block_tf: bool = False):
    return run_module("pipeline.train", ["--experiment", "tiny", "--params", str(root / "params.yaml"), *args],
                      root, backend, env, block_tf)


def metrics_of(root: pathlib.Path) -> dict:
    return json.loads((root / "models" / "tiny" / "train_metrics.json").read_text())


SCORE = """
import pathlib
import keras
import numpy as np
from components.evaluation.data import load_split
from components.evaluation.evaluate import load_model, make_predict, predict_all
data_dir, out_dir, *model_dirs = sys.argv[1:]
images, labels, info = load_split(data_dir, "test")
for model_dir in model_dirs:
    model = load_model(pathlib.Path(model_dir) / "model.keras", info)
    raw = model(images[:4])  # the exported model takes the stored uint8 images as they are
    assert keras.backend.standardize_dtype(raw.dtype) == "float32", raw.dtype
    name = pathlib.Path(model_dir).parent.parent.name
    np.save(pathlib.Path(out_dir) / f"{name}.npy", predict_all(make_predict(model), images, 64))
"""


def score(model_dirs: list[pathlib.Path], data_dir: pathlib.Path, backend: str, out: pathlib.Path) -> dict:
    """Test-split logits of exported models, through evaluate's loader and predict function on
    ``backend`` (one process for all of them), by the name of each model's root directory."""
    code = (BLOCK_TF if backend == "jax" else "import sys\n") + SCORE
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend}
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-c", code, str(data_dir), str(out), *map(str, model_dirs)],
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {directory.parent.parent.name: np.load(out / f"{directory.parent.parent.name}.npy")
            for directory in model_dirs}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tests.conftest import prepare_synthetic

    root = tmp_path_factory.mktemp("backends")
    prepare_synthetic(root / "data" / "cifar10", 640, 128, {"train": 2, "validation": 2, "test": 1})
    return root


@pytest.fixture
def root(prepared, tmp_path):
    (tmp_path / "data").symlink_to(prepared / "data")
    return tmp_path


# ----------------------------------------------------------------------------- JAX without TensorFlow
def test_jax_trains_tracked_without_tensorflow_then_resumes_after_kill(root, tmp_path_factory):
    """JAX, bfloat16: killed inside epoch 2's checkpoint write, restarted with the same
    command (TensorFlow unimportable both times, MLflow on): it resumes after epoch 1 and
    ends with the weights, history and export of an uninterrupted run."""
    import mlflow

    uri = f"sqlite:///{root / 'mlflow.db'}"
    write_params(root, epochs=3, mixed_precision="bfloat16", deterministic=True)
    killed = train(root, "jax", env={"MLFLOW_TRACKING_URI": uri, **killed_at("checkpoint-written:2")}, block_tf=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert killed.stdout.count("[train] epoch") == 1
    assert "backend jax, input device, precision mixed_bfloat16, XLA on" in killed.stdout

    resumed = train(root, "jax", env={"MLFLOW_TRACKING_URI": uri}, block_tf=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming tiny after epoch 1 of 3 at optimizer step {steps_per_epoch(resumed.stdout)} " in resumed.stdout
    metrics = metrics_of(root)
    assert (metrics["backend"], metrics["input_pipeline"], metrics["precision"]) == ("jax", "device", "mixed_bfloat16")
    assert metrics["jit_compile"] is True and metrics["registered_model_version"] == "1"
    client = mlflow.MlflowClient(uri)
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["input.pipeline"] == "device"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")) == [1, 2, 3]

    reference = tmp_path_factory.mktemp("reference")
    (reference / "data").symlink_to(root / "data")
    write_params(reference, epochs=3, mixed_precision="bfloat16", deterministic=True)
    uninterrupted = train(reference, "jax", "--no-tracking", block_tf=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert read_history(root / "models" / "tiny") == read_history(reference / "models" / "tiny")
    assert metrics["weights_sha256"] == metrics_of(reference)["weights_sha256"]


# ----------------------------------------------------------------------------- one export, two backends
# (backend trained on, train.mixed_precision): both precisions on both backends, and float32.
TRAINED = [("jax", "float16"), ("jax", "off"), ("tensorflow", "float16"), ("tensorflow", "bfloat16")]


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> dict[tuple[str, str], pathlib.Path]:
    """One epoch of each TRAINED case, with XLA on as on a GPU (JAX's runs without TensorFlow):
    the root directory of each, its model in models/tiny."""
    roots = {}
    for backend, precision in TRAINED:
        root = tmp_path_factory.mktemp(f"{backend}-{precision}")
        (root / "data").symlink_to(prepared / "data")
        write_params(root, epochs=1, mixed_precision=precision, jit_compile="on")
        result = train(root, backend, "--no-tracking", block_tf=backend == "jax")
        assert result.returncode == 0, result.stderr[-3000:]
        roots[backend, precision] = root
    return roots


def test_exported_models_score_the_same_on_both_backends(trained, prepared, tmp_path):
    """Trained on either backend in float32, float16 or bfloat16 (XLA on), exported, and
    scored by evaluate's loader on both: the same logits within the precision's tolerance."""
    keys = set(metrics_of(trained["tensorflow", "float16"]))
    for (backend, precision), root in trained.items():
        metrics = metrics_of(root)
        policy = {"off": "float32"}.get(precision, f"mixed_{precision}")
        assert (metrics["backend"], metrics["precision"], metrics["jit_compile"]) == (backend, policy, True)
        assert set(metrics) == keys, (backend, precision)  # one metrics contract for both backends
    model_dirs = [root / "models" / "tiny" for root in trained.values()]
    data_dir = prepared / "data" / "cifar10"
    logits = {backend: score(model_dirs, data_dir, backend, tmp_path / backend) for backend in ("tensorflow", "jax")}
    for (backend, precision), root in trained.items():
        ours, theirs = logits["jax"][root.name], logits["tensorflow"][root.name]
        assert ours.shape == (128, 10) and np.isfinite(ours).all(), (backend, precision)
        # float16/bfloat16 kernels round differently per backend; float32 agrees to float error
        tolerance = 1e-4 if precision == "off" else 5e-2
        np.testing.assert_allclose(ours, theirs, atol=tolerance * max(1.0, np.abs(ours).max()),
                                   err_msg=f"trained on {backend}, {precision}")
        agreement = (ours.argmax(1) == theirs.argmax(1)).mean()
        assert agreement == 1.0 if precision == "off" else agreement >= 0.97, (backend, precision, agreement)


def test_the_evaluate_stage_runs_on_jax_without_tensorflow(trained, prepared):
    """The TensorFlow-trained float16 model, judged by the evaluate stage on JAX (its params
    choose the backend; TensorFlow unimportable): the accuracy evaluate's TensorFlow scoring gives."""
    root = trained["tensorflow", "float16"]
    params = root / "params.yaml"
    params.write_text(params.read_text() + "evaluate: {backend: jax, batch_size: 64, throughput_batches: 2, "
                                           "latency_runs: 3, warmup_runs: 1, num_worst: 4}\n")
    (root / "thresholds.yaml").write_text("version: 1\ndefaults: {max_drop: 1.0}\nmin_accuracy: {}\n")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-c", BLOCK_TF + "import runpy; sys.argv = ['pipeline.evaluate', "
                             "'--experiment', 'tiny', '--params', 'params.yaml']; "
                             "runpy.run_module('pipeline.evaluate', run_name='__main__')"],
                            cwd=root, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    test = json.loads((root / "metrics" / "tiny" / "test.json").read_text())
    from components.inputs.arrays import read_split

    _, labels = read_split(prepared / "data" / "cifar10", "test")
    expected = score([root / "models" / "tiny"], prepared / "data" / "cifar10", "jax", root / "scores")
    assert test["examples"] == 128
    assert test["accuracy"] == pytest.approx(float((expected[root.name].argmax(1) == labels).mean()), abs=1e-6)


# ----------------------------------------------------------------------------- bad settings
def test_unknown_or_missing_backends_are_named(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert resolve_backend(None) == "tensorflow" and resolve_backend("jax") == "jax"
    with pytest.raises(BackendError, match=r"train.backend: unknown backend 'pytorch'; expected one of tensorflow, jax"):
        resolve_backend("pytorch")
    monkeypatch.setenv("KERAS_BACKEND", "jaxx")
    with pytest.raises(BackendError, match=r"\$KERAS_BACKEND: unknown backend 'jaxx'"):
        resolve_backend("tensorflow")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert resolve_backend("tensorflow") == "jax"  # the environment wins, as it does for Keras
    code = ("import sys; sys.modules['jax'] = None\nfrom components.backend import resolve_backend\n"
            "resolve_backend('jax')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": ""}, timeout=60)
    assert "train.backend: backend 'jax' is not installed" in result.stderr


def test_settings_a_backend_cannot_honour_are_named():
    from components.training.config import TrainSettings, resolve_experiment
    from components.training.trainer import TrainingError, check_backend_settings, input_config, precision_policy

    experiment = resolve_experiment("tiny", {"recipes": {"quick": {"epochs": 1}},
                                             "experiments": {"tiny": {"dataset": "cifar10", "model": "lenet5",
                                                                      "recipe": "quick"}}})
    # train.distribute's combinations: tests/test_multi_worker.py (distribution_mode)
    cases = [(TrainSettings(input={"pipeline": "tfdata"}), "train.input.pipeline: 'tfdata' feeds the TensorFlow"),
             (TrainSettings(input={"data_service": "grpc://localhost:5050"}), "train.input.data_service: the tf.data")]
    for settings, message in cases:
        inputs = input_config(experiment, settings, "jax")
        check_backend_settings(experiment, settings, inputs, "tensorflow")  # all fine on TensorFlow
        with pytest.raises(TrainingError, match=re.escape(message)):
            check_backend_settings(experiment, settings, inputs, "jax")
    assert input_config(experiment, TrainSettings(), "jax").pipeline == "device"
    assert input_config(experiment, TrainSettings(), "tensorflow").pipeline == "tfdata"
    assert precision_policy("auto", False, "lenet5") == "float32" and precision_policy("auto", True, "lenet5") == "mixed_float16"
    # a CPU with bfloat16 in hardware: auto takes it; a GPU still wins; off stays off
    assert precision_policy("auto", False, "lenet5", cpu_bfloat16=True) == "mixed_bfloat16"
    assert precision_policy("auto", True, "lenet5", cpu_bfloat16=True) == "mixed_float16"
    assert precision_policy("off", False, "lenet5", cpu_bfloat16=True) == "float32"
    assert precision_policy("bfloat16", False, "lenet5") == "mixed_bfloat16" and precision_policy("on", False, "lenet5") == "mixed_float16"
    # resnet110v2 overflows float16 (components/models/resnet.py): auto takes bfloat16, float16 is refused
    assert precision_policy("auto", True, "resnet110v2") == "mixed_bfloat16"
    with pytest.raises(TrainingError, match=r"train.mixed_precision: 'float16' trains resnet110v2 in float16, "
                                            r"which it cannot take: float16 overflows"):
        precision_policy("float16", False, "resnet110v2")


def test_the_stage_names_a_bad_backend_before_any_step(root):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    for settings, message in (({"backend": "pytorch"}, "train.backend: got 'pytorch', expected one of ['tensorflow', 'jax']"),
                              ({"backend": "jax", "distribute": "mirrored"}, "train.distribute: 'mirrored' is a tf.distribute")):
        write_params(root, epochs=1, **settings)
        result = subprocess.run([sys.executable, "-m", "pipeline.train", "--experiment", "tiny", "--params",
                                 "params.yaml", "--no-tracking"], cwd=root, capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 1 and message in result.stderr, (settings, result.stderr[-2000:])
        assert "[train] epoch" not in result.stdout and not (root / "models" / "tiny").exists()


CPUINFO_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx avx2 avx512f {extra} xsaves
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f {extra} xsaves
"""
CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics {extra} i8mm
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("text, expected", [
    (CPUINFO_X86.format(extra="avx512_bf16 avx512_vnni"), True),    # AMD Zen 4, Intel Cooper Lake
    (CPUINFO_X86.format(extra="amx_bf16 amx_tile"), True),          # Intel Sapphire Rapids
    (CPUINFO_X86.format(extra="avx512_vnni"), False),               # AVX-512 without bfloat16
    (CPUINFO_ARM.format(extra="bf16"), True),                       # Armv8.6 (Graviton 3)
    (CPUINFO_ARM.format(extra="sve"), False),
    ("", False),
])
def test_cpu_bfloat16_support_is_read_from_the_cpu_flags(tmp_path, text, expected):
    from components.backend import cpu_has_bfloat16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_has_bfloat16(cpuinfo) is expected
    assert cpu_has_bfloat16(tmp_path / "absent") is False  # not Linux: float32, as before
