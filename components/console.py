"""What a stage prints: its own progress and real problems, not the libraries' start-up notices.

Every stage's ``main()`` calls :func:`quiet_console` with its ``--verbose`` flag before the
heavy imports, and loads TensorFlow through :func:`start_tensorflow` where it first needs
it. With ``--verbose`` nothing is filtered and TensorFlow's log level is left as the
environment has it. Without it, exactly these messages are removed, each where it arises
(checked against TensorFlow 2.21, Apache Beam 2.77 and Keras 3.15, on a machine without
an NVIDIA GPU), and everything else is shown:

1. **TensorFlow's C++ INFO and WARNING lines**: ``TF_CPP_MIN_LOG_LEVEL=2`` unless the
   environment sets it (the stages' default all along; a user's own setting wins).
2. **Lines TensorFlow logs before it applies that level.** Abseil logging writes every
   message to stderr until ``absl::InitializeLog()`` runs, those below the threshold too,
   after the banner ``WARNING: All log messages before absl::InitializeLog() is called are
   written to STDERR`` (abseil-cpp#1718 and #1957, tensorflow#102212). TensorFlow 2.21
   logs so while it loads: ``cudart_stub.cc:31] Could not find cuda drivers on your
   machine, GPU will not be used.`` (twice, wherever the CUDA 12 runtime is missing; the
   train stage's first line says CPU or GPU anyway) and ``port.cc:153] oneDNN custom
   operations are on...`` (twice, on CPUs where oneDNN is on by default: AVX512_VNNI,
   AVX512_BF16, AVX_VNNI or AMX; or with ``TF_ENABLE_ONEDNN_OPTS=1``). Setting
   ``TF_ENABLE_ONEDNN_OPTS`` to its default does not silence the notice: ``1`` still
   prints it (tensorflow/core/util/port.cc logs it whenever oneDNN is on), and ``0``
   turns oneDNN off, which changes speed and round-off. So while TensorFlow loads, the
   banner and each abseil line below ``TF_CPP_MIN_LOG_LEVEL`` are dropped, as the level
   would have dropped them.
3. **``cuda_platform.cc:52] failed call to cuInit: ...``**, an ERROR: TensorFlow probes
   for CUDA on every machine, and on one without an NVIDIA GPU the probe fails. Dropped
   only where that is the expected outcome: no ``/dev/nvidia*`` device and no loadable
   driver library (``libcuda.so.1``), or ``CUDA_VISIBLE_DEVICES`` hiding every GPU. With
   a GPU present the same line means a broken driver, and it shows. The alternatives
   are worse: ``TF_CPP_MIN_LOG_LEVEL=3`` hides it with every other C++ ERROR of the whole
   run, and ``CUDA_VISIBLE_DEVICES`` does not help (the probe runs, and fails, anyway).
4. **Beam's ``apitools not found, and bigquery client libraries are not available despite
   the import not raising an ImportError.``**: a WARNING on the root logger from
   ``apache_beam/io/gcp/internal/clients/bigquery/__init__.py`` whenever Beam loads its GCP
   IO without the optional apitools (nothing here uses GCP). :data:`APITOOLS_FILTER`, a
   :class:`logging.Filter` on the root logger, drops that record in this process. Beam's
   worker processes print it as well, with their harness's ``Logging handler created.``
   (logged at INFO before the worker applies its log level), into the stderr that
   ``pipeline/prepare.py`` holds back; :func:`is_beam_worker_noise` picks those lines out
   of what it replays.

5. **MLflow's INFO lines** (``Creating initial MLflow database tables...``, ``Skip logging
   GPU metrics. Set logger level to DEBUG for more details.``, system-metrics monitoring
   started and stopped): ``MLFLOW_LOGGING_LEVEL=WARNING`` unless the environment sets it,
   so MLflow's warnings and errors still show. The model registry's lines (``Successfully
   registered model``, ``Created version``) are printed directly, not logged, and still
   show; the train stage prints the run id, registered name and version itself too.

Keras' ``shuffle=True`` and "ran out of data" warnings are not filtered: the trainer calls
``fit`` the way that does not provoke them (``components/training/trainer.py``).
``tests/test_console.py`` runs every stage to show each message gone and, with
``--verbose``, back where this machine still prints it; when a library stops printing one,
its filter can go.

This module imports only the standard library: it runs as its own process too
(:func:`stderr_filtered`).
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import re
import subprocess
import sys
from typing import BinaryIO, Callable, Iterator, Mapping

DEFAULT_TF_LOG_LEVEL = "2"  # hides TensorFlow's C++ INFO and WARNING lines (item 1)
DEFAULT_MLFLOW_LOG_LEVEL = "WARNING"  # hides MLflow's INFO lines (item 5)
ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# An abseil log line: severity letter, MMDD, time, thread id, file:line], e.g.
# "I0000 00:00:1796123630.384390   29523 cudart_stub.cc:31] Could not find cuda drivers ..."
ABSL_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ [^\s\]]+:\d+\] ")
SEVERITIES = "IWEF"  # INFO, WARNING, ERROR, FATAL: the numbers TF_CPP_MIN_LOG_LEVEL counts in
FATAL = SEVERITIES.index("F")
ERROR = SEVERITIES.index("E")
CUINIT_FAILURE = "] failed call to cuInit: "
APITOOLS_NOTICE = ("apitools not found, and bigquery client libraries are not available despite the import "
                   "not raising an ImportError.")
# Beam's worker processes print these through logging's default format (item 4).
BEAM_WORKER_NOISE = frozenset({f"WARNING:root:{APITOOLS_NOTICE}", "INFO:__main__:Logging handler created."})
# How long to wait, after TensorFlow has loaded, for the filter process to pass on the last
# lines. It ends when every copy of the pipe is closed; a process started meanwhile and
# still running would hold one, and must not stall the stage.
FORWARDER_GRACE_S = 10


class BeamApitoolsNotice(logging.Filter):
    """Drops Beam's notice that the optional apitools is missing (item 4), nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_beam = f"{os.sep}apache_beam{os.sep}" in record.pathname
        return not (from_beam and record.getMessage() == APITOOLS_NOTICE)


APITOOLS_FILTER = BeamApitoolsNotice()


def quiet_console(verbose: bool) -> None:
    """Set up the console of a stage, before it imports TensorFlow or Beam: TensorFlow's C++
    log level (item 1 of the module docstring), the filter on Beam's apitools notice
    (item 4) and MLflow's log level (item 5). With ``verbose``, nothing: every library
    prints what it prints.

    Stages that use TensorFlow then load it through :func:`start_tensorflow`.
    """
    root = logging.getLogger()
    if verbose:
        root.removeFilter(APITOOLS_FILTER)  # in case an earlier call in this process installed it
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", DEFAULT_MLFLOW_LOG_LEVEL)  # read when mlflow is imported (item 5)
    root.addFilter(APITOOLS_FILTER)  # once: addFilter skips a filter already there


def start_tensorflow(verbose: bool) -> None:
    """Import TensorFlow and let it probe for GPUs, which is when its C++ code prints its
    start-up lines; without ``verbose``, those that are noise (items 2 and 3 of the module
    docstring) are left out and the rest pass as they come. Call :func:`quiet_console`
    first: the level it sets decides what is below it. Once TensorFlow is loaded, a call
    only repeats the (cached) device listing.
    """
    already_loaded = "tensorflow" in sys.modules
    with contextlib.nullcontext() if verbose or already_loaded else stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe (cuInit) runs here, once per process


@contextlib.contextmanager
def stderr_filtered() -> Iterator[None]:
    """Pass file descriptor 2 (where C++ code writes too) through a separate process while
    the block runs: this module run as a script, which forwards each line as it arrives
    unless it is TensorFlow start-up noise. A separate process, so that what the block
    prints just before a crash (an abort while TensorFlow loads) still gets through.
    """
    sys.stderr.flush()
    original = os.dup(2)
    try:
        # Its own session, so Ctrl-C does not stop it before it has passed everything on.
        forwarder = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=original, stderr=original, start_new_session=True)
    except OSError:
        os.close(original)
        raise
    os.dup2(forwarder.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        os.close(original)
        forwarder.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            forwarder.wait(FORWARDER_GRACE_S)


def forward(source: BinaryIO, target: BinaryIO, is_noise: Callable[[str], bool]) -> None:
    """Copy ``source`` to ``target`` line by line as lines arrive, leaving out noise."""
    for line in source:
        if not is_noise(text_of(line)):
            target.write(line)
            target.flush()


def without_noise(data: bytes, is_noise: Callable[[str], bool]) -> bytes:
    """``data`` less the lines ``is_noise`` picks (a last line without a newline counts too)."""
    return b"".join(line for line in data.splitlines(keepends=True) if not is_noise(text_of(line)))


def text_of(line: bytes) -> str:
    """A line of output as text, without its line ending, for matching."""
    return line.decode("utf-8", "replace").rstrip("\r\n")


def is_tensorflow_start_up_noise(line: str, min_level: int, cuda_probe_fails: bool) -> bool:
    """Whether a line printed while TensorFlow loads is noise: the abseil banner, an abseil
    line below ``min_level`` (item 2), or the failed CUDA probe where it has to fail
    (item 3). Anything that is not an abseil line (a Python warning, a traceback) is kept,
    and so is every FATAL line."""
    if line == ABSL_BANNER:
        return True
    match = ABSL_LINE.match(line)
    if match is None:
        return False
    severity = SEVERITIES.index(match.group(1))
    if severity < min(min_level, FATAL):
        return True
    return severity == ERROR and cuda_probe_fails and CUINIT_FAILURE in line


def is_beam_worker_noise(line: str) -> bool:
    """Whether a line a Beam worker process printed is its start-up chatter (item 4)."""
    return line in BEAM_WORKER_NOISE


def tf_min_log_level(environ: Mapping[str, str]) -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it: unset or not a number is 0."""
    try:
        return int(environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def cuda_probe_must_fail(environ: Mapping[str, str]) -> bool:
    """Whether TensorFlow's CUDA probe can only fail here: every GPU hidden by
    ``CUDA_VISIBLE_DEVICES``, or no NVIDIA GPU on the machine at all."""
    hidden = environ.get("CUDA_VISIBLE_DEVICES")
    return (hidden is not None and hidden.strip() in ("", "-1")) or not nvidia_gpu_present()


def nvidia_gpu_present() -> bool:
    """Whether the machine has an NVIDIA device node (``/dev/nvidia*``) or the driver library
    TensorFlow's probe loads (``libcuda.so.1``): either means a failed probe is a real problem."""
    if glob.glob("/dev/nvidia*"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def main() -> int:
    """The filter process of :func:`stderr_filtered`: standard input to standard output,
    less TensorFlow's start-up noise under the level and GPU situation of the environment."""
    min_level, cuda_probe_fails = tf_min_log_level(os.environ), cuda_probe_must_fail(os.environ)
    forward(sys.stdin.buffer, sys.stdout.buffer,
            lambda line: is_tensorflow_start_up_noise(line, min_level, cuda_probe_fails))
    return 0


if __name__ == "__main__":
    sys.exit(main())
