"""Workarounds for bugs in Keras and TensorFlow: all of them, here, and nowhere else.

The one MLflow workaround (``mlflow.keras.log_model`` with an input example, mlflow#16183)
lives with the rest of MLflow in ``components/tracking/logged_model.py``, written down the
same way, so that MLflow stays inside ``components/tracking``.

Each workaround names the library code it works around, the versions it was checked
against, and what goes wrong without it; each has a test that fails once the library
no longer needs it (``tests/test_compat.py``), so it can be removed rather than linger.
:func:`apply_keras_workarounds` installs them; it is idempotent and cheap, and is called
wherever our code hands data to Keras under a ``tf.distribute`` strategy (the input
pipeline and the strategy factory).

Not here: the libraries' console noise. Those filters change no library behaviour, only
what a stage shows (abseil printing TensorFlow's start-up lines below the log level, the
failed CUDA probe on machines without a GPU, Beam's apitools notice), so they live in
``components/console.py``, written down the same way, with their tests in
``tests/test_console.py``.

1. **Keras builds a distributed model from the MEAN of the replicas' first batches.**
   ``TensorFlowTrainer._maybe_symbolic_build`` (keras/src/backend/tensorflow/trainer.py,
   3.x up to at least 3.15.1) calls ``strategy.reduce("MEAN", first_batch, axis=None)``
   only to learn the batch's shapes and dtypes. That all-reduce needs every replica's
   batch to have the same shape, so ``evaluate`` / ``fit`` / ``predict`` fail before the
   first step whenever the first global batch does not split evenly (a split of 17
   examples at global batch 32 over two replicas: 9 and 8, or 16 and 1 through
   ``distribute_datasets_from_function``), and under MultiWorkerMirroredStrategy the
   collective fails outright. Fix: build from this worker's first replica's batch, which
   has the same structure, dtypes and per-example shapes. Only single-host
   ``MirroredStrategy`` needs it now: several workers train on JAX with
   ``keras.distribution`` (:mod:`components.training.distribute`), because Keras 3 does not
   support MultiWorkerMirroredStrategy with ``fit`` (the maintainers' position, which also
   covers this build path: https://github.com/keras-team/keras/issues/20585). No upstream
   issue tracks the MirroredStrategy case.
2. **keras.utils.set_random_seed imports TensorFlow on every backend.** Keras seeds
   TensorFlow's global generator whenever TensorFlow is installed, by design (its
   docstring: "the TensorFlow seed is set even if you're not using TensorFlow as your
   backend framework", for tf.data users; keras/src/utils/rng_utils.py, 3.x up to at
   least 3.15.1). On our JAX path nothing uses TensorFlow, and that import costs ~10 s
   and ~0.5 GB per stage where TensorFlow is installed, and breaks the JAX path's
   promise of not needing it. :func:`set_random_seed` does what Keras' does minus the
   TensorFlow seed on the other backends (Keras' global seed, the global
   SeedGenerator, Python's and NumPy's generators), and calls Keras' on TensorFlow.
   Not a Keras bug (its documented behaviour), so no upstream issue; the tests show
   Keras still imports TensorFlow there, and that ours seeds Keras identically.
3. **Keras' saving runs a cross-process collective under a multi-process distribution.**
   ``saving_lib.get_attr_skipset`` (keras/src/saving/saving_lib.py, 3.x up to at least
   3.15.1) builds a throwaway ``Optimizer(1.0)`` to learn which attributes to skip; under
   ``keras.distribution`` its learning-rate variable is placed with the distribution's
   layout, and for an array spanning several processes ``jax.device_put`` checks that
   every process passes the same value, a collective. Saved by the chief alone (its
   checkpoints, its export), that collective meets whatever the other workers run next:
   seen here as "passed to device_put is not the same on each process" on both. Fix:
   :func:`outside_distribution` unsets the distribution around the chief's saving and
   export, so objects built there are plain local ones; the weights, replicated on every
   worker, are read from this worker's copy. No upstream issue found (searched
   keras-team/keras for multi-host saving). ``tests/test_compat.py`` shows Keras still
   places a variable with the distribution's layout while saving, and that ours does not.
"""
from __future__ import annotations

import contextlib
import functools
import random

# Keras versions the workarounds were checked against. Outside this range they are not
# applied blindly: apply_keras_workarounds raises, so an upgrade is a decision, not a surprise.
KERAS_CHECKED = ((3, 0), (3, 15))
UPSTREAM = "https://github.com/keras-team/keras/issues/20585"
# What each workaround replaced, by name, so tests can show the library still needs it.
ORIGINALS: dict[str, object] = {}


class CompatError(RuntimeError):
    """A workaround that no longer fits the installed library version."""


def keras_version() -> tuple[int, int]:
    """(major, minor) of the installed Keras."""
    import keras

    major, minor = keras.__version__.split(".")[:2]
    return int(major), int(minor)


def check_keras_version(what: str, then: str) -> None:
    """CompatError unless the installed Keras is within :data:`KERAS_CHECKED`, saying which
    workaround (``what``) was checked against which versions and what to do (``then``)."""
    low, high = KERAS_CHECKED
    version = keras_version()
    if not low <= version <= high:
        raise CompatError(f"keras {'.'.join(map(str, version))} is outside the versions {what} in {__name__} "
                          f"was checked against ({low[0]}.{low[1]} to {high[0]}.{high[1]}); run "
                          f"tests/test_compat.py, then widen KERAS_CHECKED or {then}")


@functools.cache
def apply_keras_workarounds() -> None:
    """Install the Keras workarounds of this module (once per process)."""
    check_keras_version("the workarounds", f"drop what is fixed ({UPSTREAM})")
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    if not hasattr(keras_tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build"):
        raise CompatError(f"keras {keras_version()}: TensorFlowTrainer._maybe_symbolic_build is gone; "
                          f"re-check workaround 1 of {__name__}")
    ORIGINALS.setdefault("_maybe_symbolic_build", keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build)
    keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _build_from_local_batch

def _build_from_local_batch(self, iterator=None, data_batch=None):
    """``TensorFlowTrainer._maybe_symbolic_build`` building from one replica's batch (workaround 1)."""
    import tensorflow as tf

    if self._distribute_strategy is None:
        return  # as Keras: without a strategy, building waits for the first traced step
    if iterator is not None and data_batch is None:
        for _, _, batches in iterator:
            batch = next(batches)
            local = self.distribute_strategy.experimental_local_results
            data_batch = tf.nest.map_structure(
                lambda value: local(value)[0] if isinstance(value, tf.distribute.DistributedValues) else value,
                batch)
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` without its TensorFlow import on other backends (workaround 2)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    check_keras_version("workaround 2", "re-check keras/src/utils/rng_utils.py")
    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


@contextlib.contextmanager
def outside_distribution():
    """No ``keras.distribution`` inside the block (workaround 3): what Keras builds there, for
    saving or for an export, is local to this process. Restores the distribution after."""
    import keras

    check_keras_version("workaround 3", "re-check get_attr_skipset in keras/src/saving/saving_lib.py")
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)
