"""The console: every stage prints its own progress and none of the libraries' start-up
noise; ``--verbose`` shows all of it again.

The four stages run for real, in subprocesses, as ``dvc repro`` runs them, in one
temporary repository on a tiny synthetic CIFAR-10 (prepare -> train -> evaluate -> report,
once per module, about a minute). ``TF_ENABLE_ONEDNN_OPTS=1`` makes TensorFlow print its
oneDNN notice on any CPU, as it does by default on those with AVX512_VNNI or AMX, so that
filter is tested here too. See ``components/console.py`` for why each message is noise.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from components import console
from tests.conftest import REPO

# What no stage may print without --verbose (each is noise on this machine: components/console.py).
NOISE = ("ran out of data", "shuffle=True", "cuInit", "oneDNN custom operations", "apitools",
         "absl::InitializeLog", "Could not find cuda drivers", "Logging handler created", " INFO mlflow.")
ONEDNN_NOTICE = "oneDNN custom operations are on"
CUINIT_FAILURE = "failed call to cuInit"


def stage_environment(root: pathlib.Path) -> dict[str, str]:
    """This process's environment as a user's shell would have it: no TensorFlow or MLflow log
    level (tests/conftest.py sets one; the stages set their own), and the MLflow store of the
    repository at ``root`` (the default store would be this checkout's mlflow.db)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")}
    return {**environment, "TF_ENABLE_ONEDNN_OPTS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}


def run_stage(root: pathlib.Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m pipeline.<stage> ARGS`` run from ``root``, as DVC runs it from the repository."""
    return subprocess.run([sys.executable, "-m", f"pipeline.{stage}", *args], cwd=root, capture_output=True,
                          text=True, env=stage_environment(root), timeout=300)


def noise_in(stderr: str) -> list[str]:
    return [noise for noise in NOISE if noise in stderr]


def write_repository(root: pathlib.Path, **prepare) -> pathlib.Path:
    """params.yaml and thresholds.yaml of a one-experiment repository at ``root``."""
    params = {
        # Beam's default runner settings (two worker processes): their start-up notices are tested too.
        "prepare": {"source": "synthetic", "out_root": str(root / "data"), "num_shards": {"train": 2, "validation": 1,
                                                                                          "test": 1},
                    "synthetic": {"train_examples": 200, "test_examples": 40, "seed": 1}, **prepare},
        "train": {"models_dir": str(root / "models"), "checkpoints_dir": str(root / "checkpoints"),
                  "input": {"shuffle_buffer": 1000}},
        "recipes": {"quick": {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}, "epochs": 2,
                              "batch_size": 32}},
        "experiments": {"tiny": {"dataset": "cifar10", "model": "lenet5", "recipe": "quick"}},
        "evaluate": {"batch_size": 64, "throughput_batches": 2, "latency_runs": 3, "warmup_runs": 1, "num_worst": 9},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "thresholds.yaml").write_text("version: 1\ndefaults: {max_drop: 0.01}\nmin_accuracy:\n"
                                          "  cifar10: {lenet5: 0.0}\n")
    return root


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The whole pipeline, once, without --verbose: each stage's completed process."""
    root = write_repository(tmp_path_factory.mktemp("console"))
    results = {}
    for stage, args in (("prepare", ("--dataset", "cifar10")), ("train", ("--experiment", "tiny")),
                        ("evaluate", ("--experiment", "tiny")), ("report", ())):
        results[stage] = run_stage(root, stage, *args)
        assert results[stage].returncode == 0, f"{stage}:\n{results[stage].stderr[-3000:]}"
    return results


# ------------------------------------------------------------------ the stages, quiet
def test_prepare_prints_its_progress_and_no_noise(stages):
    result = stages["prepare"]
    assert "[prepare] cifar10: wrote " in result.stdout
    assert noise_in(result.stderr) == [], result.stderr


def test_train_prints_every_epoch_and_no_noise(stages):
    result = stages["train"]
    assert "[train] tiny: lenet5 on cifar10" in result.stdout
    assert "[train] epoch 1/2 " in result.stdout and "[train] epoch 2/2 " in result.stdout
    assert "best val_accuracy" in result.stdout
    assert noise_in(result.stderr) == [], result.stderr


def test_evaluate_prints_its_figures_and_no_noise(stages):
    result = stages["evaluate"]
    assert "tiny: lenet5 on cifar10: accuracy " in result.stdout and "verdict: accepted" in result.stdout
    assert noise_in(result.stderr) == [], result.stderr


def test_report_prints_where_it_wrote_and_no_noise(stages):
    result = stages["report"]
    assert "report: wrote " in result.stdout
    assert noise_in(result.stderr) == [], result.stderr


# ---------------------------------------------------------------- the stages, verbose
def test_verbose_prepare_shows_beams_notices(tmp_path):
    root = write_repository(tmp_path, direct_running_mode="in_memory", direct_num_workers=1)
    result = run_stage(root, "prepare", "--dataset", "cifar10", "--verbose")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "apitools not found" in result.stderr  # Beam still prints it: the filter is needed, and off


def test_verbose_shows_tensorflows_start_up_lines_and_quiet_only_real_errors(tmp_path):
    """An unknown experiment: TensorFlow starts, then the stage fails in one line. Quiet,
    that line is all of stderr; verbose, TensorFlow's start-up lines come back."""
    root = write_repository(tmp_path)
    quiet = run_stage(root, "train", "--experiment", "missing")
    lines = quiet.stderr.splitlines()
    assert quiet.returncode == 1 and len(lines) == 1 and lines[0].startswith("train: error: "), quiet.stderr

    verbose = run_stage(root, "train", "--experiment", "missing", "--verbose")
    assert verbose.returncode == 1 and "train: error:" in verbose.stderr
    assert ONEDNN_NOTICE in verbose.stderr and console.ABSL_BANNER in verbose.stderr, verbose.stderr
    if not console.nvidia_gpu_present():
        assert CUINIT_FAILURE in verbose.stderr, verbose.stderr


# ------------------------------------------------------------ the filters themselves
def absl(severity: str, where: str, message: str) -> str:
    """A line in abseil's format, as TensorFlow prints it before logging is initialised."""
    return f"{severity}0000 00:00:1796123630.384390   29523 {where}] {message}"


CUINIT_LINE = absl("E", "cuda_platform.cc:52", "failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: "
                                                 "UNKNOWN ERROR (303)")


@pytest.mark.parametrize("line, min_level, probe_fails, noise", [
    (console.ABSL_BANNER, 2, False, True),
    (absl("I", "cudart_stub.cc:31", "Could not find cuda drivers on your machine, GPU will not be used."), 2, False,
     True),
    (absl("I", "port.cc:153", "oneDNN custom operations are on."), 1, False, True),
    (absl("I", "port.cc:153", "oneDNN custom operations are on."), 0, False, False),  # the level asks for INFO
    (absl("W", "some.cc:1", "a warning"), 2, False, True),
    (absl("W", "some.cc:1", "a warning"), 1, False, False),
    (absl("E", "some.cc:1", "a real error"), 2, True, False),
    (CUINIT_LINE, 2, True, True),  # no NVIDIA GPU: the probe can only fail
    (CUINIT_LINE, 2, False, False),  # a GPU is there: the driver is broken
    (absl("F", "cpu_feature_guard.cc:1", "compiled to use AVX"), 3, False, False),  # FATAL always shows
    ("UserWarning: something Python said", 3, True, False),
    ("Traceback (most recent call last):", 3, True, False),
])
def test_which_tensorflow_start_up_lines_are_noise(line, min_level, probe_fails, noise):
    assert console.is_tensorflow_start_up_noise(line, min_level, probe_fails) is noise


def test_cuda_probe_must_fail_where_every_gpu_is_hidden_or_none_is_there():
    assert console.cuda_probe_must_fail({"CUDA_VISIBLE_DEVICES": ""})
    assert console.cuda_probe_must_fail({"CUDA_VISIBLE_DEVICES": "-1"})
    assert console.cuda_probe_must_fail({"CUDA_VISIBLE_DEVICES": "0"}) is not console.nvidia_gpu_present()
    assert console.cuda_probe_must_fail({}) is not console.nvidia_gpu_present()


def test_tf_min_log_level_reads_like_tensorflow():
    assert [console.tf_min_log_level(env) for env in ({}, {"TF_CPP_MIN_LOG_LEVEL": "2"},
                                                      {"TF_CPP_MIN_LOG_LEVEL": "x"})] == [0, 2, 0]


def test_without_noise_keeps_every_other_line_byte_for_byte():
    data = b"kept 1\nnoise\nkept \xff 2\r\nnoise\nlast, no newline"
    assert console.without_noise(data, lambda line: line == "noise") == b"kept 1\nkept \xff 2\r\nlast, no newline"


def test_beam_worker_noise_is_those_two_lines_exactly():
    assert console.is_beam_worker_noise(f"WARNING:root:{console.APITOOLS_NOTICE}")
    assert console.is_beam_worker_noise("INFO:__main__:Logging handler created.")
    assert not console.is_beam_worker_noise("WARNING:root:something else")
    assert not console.is_beam_worker_noise(f"WARNING:root:{console.APITOOLS_NOTICE} and more")


def test_the_apitools_filter_drops_beams_record_only(tmp_path):
    """Beam's module logs the notice through the root logger when it is imported; the same
    text logged from anywhere else is not Beam's notice, and shows."""
    script = ("import logging\nfrom components import console\nlogging.basicConfig()\n"
              "console.quiet_console(verbose=False)\n"
              "import apache_beam.io.gcp.internal.clients.bigquery\n"
              "logging.warning(console.APITOOLS_NOTICE + ' (not from Beam)')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env=stage_environment(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"WARNING:root:{console.APITOOLS_NOTICE} (not from Beam)\n"


def test_verbose_takes_the_filter_off_again():
    import logging

    try:
        console.quiet_console(verbose=False)
        assert console.APITOOLS_FILTER in logging.getLogger().filters
        console.quiet_console(verbose=True)
        assert console.APITOOLS_FILTER not in logging.getLogger().filters
    finally:
        logging.getLogger().removeFilter(console.APITOOLS_FILTER)


def test_stderr_filtered_passes_real_lines_and_what_comes_before_a_crash(tmp_path):
    """C++-level writes to fd 2 go through the filter process; the process aborting inside
    the block does not lose what it wrote."""
    script = (f"import os\nfrom components import console\nwith console.stderr_filtered():\n"
              f"    os.write(2, {CUINIT_LINE + chr(10)!r}.encode())\n"
              f"    os.write(2, b'a real line\\n')\n"
              f"    os.write(2, {console.ABSL_BANNER + chr(10)!r}.encode())\n"
              f"    os.write(2, b'last words\\n')\n"
              f"    os.abort()\n")
    environment = {**stage_environment(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env=environment, timeout=60)
    assert result.returncode < 0  # aborted
    assert result.stderr == "a real line\nlast words\n"


def test_prepare_keeps_what_a_successful_run_prints_less_beams_worker_notices(capfd):
    from pipeline.prepare import stderr_held_back

    with stderr_held_back():
        os.write(2, f"WARNING:root:{console.APITOOLS_NOTICE}\n".encode())
        os.write(2, b"INFO:__main__:Logging handler created.\n")
        os.write(2, b"UserWarning: a real warning\n")
    assert capfd.readouterr().err == "UserWarning: a real warning\n"
