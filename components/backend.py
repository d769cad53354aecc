"""Which Keras backend runs a stage (TensorFlow or JAX), chosen before Keras is imported.

Keras 3 reads ``KERAS_BACKEND`` once, when it is first imported, so a stage picks its
backend first thing, from its params (``train.backend``, ``evaluate.backend``) or from a
``KERAS_BACKEND`` already set in the environment, which wins, as it does for Keras
itself. The backend a run used is recorded with its results (``train_metrics.json``,
the MLflow run), so an override is never silent.

Everything the stages need that differs between backends lives here, behind small
functions: compiling a function for the backend's compiler (XLA on both), asking whether
an accelerator is present, and switching on deterministic kernels. Nothing here imports
TensorFlow unless the backend is TensorFlow.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Callable

BACKENDS = ("tensorflow", "jax")
DEFAULT_BACKEND = "tensorflow"
ENV = "KERAS_BACKEND"


class BackendError(RuntimeError):
    """A backend that is unknown, not installed, or cannot be switched to in this process."""


def resolve_backend(configured: str | None, where: str = "train.backend") -> str:
    """The backend to use: ``$KERAS_BACKEND`` when set, else ``configured``, else TensorFlow.

    Raises BackendError naming the setting (``where`` or ``KERAS_BACKEND``) for a name
    that is not one of :data:`BACKENDS`, or a backend whose package is not installed.
    """
    from_env = os.environ.get(ENV, "").strip()
    name, source = (from_env, f"${ENV}") if from_env else (configured or DEFAULT_BACKEND, where)
    if name not in BACKENDS:
        raise BackendError(f"{source}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    try:
        installed = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module entry of None, or a finder that refuses it
        installed = False
    if not installed:
        extra = "pip install 'jax[cpu]' (or jax[cuda13] on a GPU)" if name == "jax" else "pip install tensorflow"
        raise BackendError(f"{source}: backend {name!r} is not installed in {sys.prefix} ({extra})")
    return name


def activate_backend(name: str, deterministic: bool = False) -> str:
    """Make ``name`` the Keras backend of this process (before Keras is imported) and return it.

    Once Keras is imported its backend is fixed; asking for another one then raises
    BackendError rather than training on the wrong one. ``deterministic`` on JAX asks XLA
    for deterministic GPU kernels now, because XLA reads its flags once, when JAX starts
    (see :func:`enable_determinism`).
    """
    if deterministic and name == "jax":
        _xla_deterministic_flag()
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise BackendError(f"keras is already imported with backend {keras.backend.backend()!r} in this "
                               f"process; backend {name!r} must be chosen before keras is imported")
        return name
    os.environ[ENV] = name
    return name


def current_backend() -> str:
    """The backend Keras runs on in this process (imports Keras)."""
    import keras

    return keras.backend.backend()


def has_accelerator() -> bool:
    """Whether the backend sees a GPU (a TPU counts for JAX)."""
    if current_backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


# /proc/cpuinfo flags of CPUs with bfloat16 arithmetic in hardware: x86's AVX512-BF16 and
# AMX-BF16 (Intel Cooper Lake / Sapphire Rapids on, AMD Zen 4 on), Arm's BF16 (Armv8.6).
# Without them TensorFlow emulates bfloat16, several times slower than float32.
BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (:data:`BFLOAT16_CPU_FLAGS` in
    ``cpuinfo``'s ``flags``/``Features`` lines). False where the file cannot be read (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return not BFLOAT16_CPU_FLAGS.isdisjoint(value.split())
    except OSError:
        return False
    return False


def device_kind() -> str:
    """``GPU`` or ``CPU``, for logs and records."""
    return "GPU" if has_accelerator() else "CPU"


def enable_determinism() -> None:
    """Deterministic kernels, process-wide: same inputs and hardware, same bits.

    TensorFlow: op determinism. JAX on CPU is deterministic already; on a GPU XLA needs
    ``--xla_gpu_deterministic_ops``, which it reads when JAX starts: the stage sets it
    through :func:`activate_backend` (``deterministic=True``), before anything starts JAX.
    """
    if current_backend() == "jax":
        _xla_deterministic_flag()
        return
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def _xla_deterministic_flag() -> None:
    """``--xla_gpu_deterministic_ops=true`` in ``XLA_FLAGS``: it takes effect only if set before JAX starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()


def compile_function(function: Callable) -> Callable:
    """``function`` compiled by the backend's XLA compiler: ``jax.jit`` or ``tf.function(jit_compile=True)``.

    ``function`` must be written with ``keras.ops`` on backend tensors and be pure: the
    compiled version retraces for each new input shape (the last partial batch, say).
    """
    if current_backend() == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function, jit_compile=True, reduce_retracing=True)

