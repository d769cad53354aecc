"""How a run is spread: one device, a ``tf.distribute`` strategy on one host, or several
worker processes on Keras' JAX backend.

**Several workers: Keras on JAX with ``keras.distribution``.** Keras 3 does not support
``MultiWorkerMirroredStrategy`` with ``fit`` (keras-team/keras#20585: it took two patches of
Keras internals to run at all, and still printed per-worker figures). On JAX,
``keras.distribution`` is Keras' supported multi-process path: ``jax.distributed`` joins the
processes (gloo collectives on CPUs, NCCL on GPUs), ``DataParallel`` keeps every weight as one
array replicated on all devices, and each step's batch is one global array assembled from
every worker's local batch. So the gradient, the loss, the metrics and the update are
computed once, for the global batch, by XLA's collectives: the workers cannot drift apart,
and no Keras internal is patched. Single-host ``MirroredStrategy`` stays on TensorFlow.

The cluster is described the way Keras reads it (``keras.distribution.initialize``): each
process gets

* ``KERAS_DISTRIBUTION_JOB_ADDRESSES``: ``host:port`` of worker 0 (the coordinator) first;
  a comma-separated list of every worker's address is accepted too;
* ``KERAS_DISTRIBUTION_NUM_PROCESSES``: the number of workers;
* ``KERAS_DISTRIBUTION_PROCESS_ID``: this worker's index, 0 to N-1. Worker 0 is the chief:
  it alone writes checkpoints, the model and the records.

``train.distribute: auto`` trains on several workers when these say N > 1 (on JAX), else
with ``MirroredStrategy`` over several local GPUs (TensorFlow), else on one device.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import secrets
from typing import Sequence

import numpy as np

from components.compat import apply_keras_workarounds
from components.config import ConfigError

ADDRESSES_ENV = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_WORKERS_ENV = "KERAS_DISTRIBUTION_NUM_PROCESSES"
WORKER_ENV = "KERAS_DISTRIBUTION_PROCESS_ID"
MULTI_WORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"
# Written by the chief into the checkpoint directory; every worker must read the same token
# there, which proves they share the directory resume reads from.
SHARED_TOKEN_FILE = ".workers-token"
# Seconds a worker waits for all workers to join at start (JAX's default).
JOIN_TIMEOUT_S = 300
# Seconds without a heartbeat after which a worker counts as dead, and the longest a worker
# waits for the others at exit: a killed worker's peers fail within about this long.
PEER_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place among the workers (one worker, index 0, when nothing is set)."""

    num_workers: int = 1
    worker: int = 0
    addresses: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.worker == 0

    @property
    def tag(self) -> str:
        """The prefix of this process's log lines: ``[train]``, or ``[train w/N]`` among several."""
        return f"[train {self.worker}/{self.num_workers}]" if self.num_workers > 1 else "[train]"


def cluster_from_env(environ=os.environ) -> Cluster:
    """The cluster ``KERAS_DISTRIBUTION_*`` describes; ConfigError naming the variable when one is malformed."""
    def integer(name: str, default: int) -> int:
        raw = environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"${name}: expected an integer, got {raw!r}") from None

    num_workers = integer(NUM_WORKERS_ENV, 1)
    worker = integer(WORKER_ENV, 0)
    addresses = environ.get(ADDRESSES_ENV, "").strip() or None
    if num_workers < 1:
        raise ConfigError(f"${NUM_WORKERS_ENV}: expected a number of workers >= 1, got {num_workers}")
    if not 0 <= worker < num_workers:
        raise ConfigError(f"${WORKER_ENV}: expected a worker index from 0 to {num_workers - 1} "
                          f"(${NUM_WORKERS_ENV}={num_workers}), got {worker}")
    if num_workers > 1 and not addresses:
        raise ConfigError(f"${NUM_WORKERS_ENV}={num_workers} needs ${ADDRESSES_ENV}: host:port of worker 0 "
                          f"(the coordinator), e.g. 10.0.0.1:1234")
    if addresses and "," in addresses and len(addresses.split(",")) != num_workers:
        raise ConfigError(f"${ADDRESSES_ENV}: {len(addresses.split(','))} addresses for "
                          f"${NUM_WORKERS_ENV}={num_workers} workers: {addresses!r}")
    return Cluster(num_workers, worker, addresses)


def is_chief() -> bool:
    """Whether this process writes outputs (checkpoints, the model, records): worker 0."""
    return cluster_from_env().is_chief


def distribution_mode(setting: str, backend: str, cluster: Cluster) -> str:
    """What ``train.distribute`` means here: ``multi_worker``, ``mirrored``, ``default`` or
    ``auto`` (TensorFlow: mirrored when there are several GPUs, decided by :func:`make_strategy`).

    A combination that cannot be honoured is a ConfigError naming the setting, before any step:
    several workers on TensorFlow (unsupported with ``fit``), a ``tf.distribute`` strategy on
    JAX, ``multi_worker`` without a cluster, or a cluster with ``default``.
    """
    several = cluster.num_workers > 1
    if backend == "tensorflow":
        tasks = sum(len(v) for v in (_tf_config().get("cluster") or {}).values())
        if setting == "multi_worker" or several or tasks > 1:
            raise ConfigError(
                f"train.distribute: {setting!r} with {max(cluster.num_workers, tasks)} worker(s) on the TensorFlow "
                f"backend: Keras 3 does not support MultiWorkerMirroredStrategy with fit ({MULTI_WORKER_ISSUE}); "
                f"train several workers with train.backend: jax and ${NUM_WORKERS_ENV} (README, Training)")
        return setting
    if setting == "mirrored":
        raise ConfigError(f"train.distribute: 'mirrored' is a tf.distribute strategy; backend {backend!r} trains "
                          f"on one device, or on several workers with 'multi_worker' (or 'auto')")
    if setting == "multi_worker" and not several:
        raise ConfigError(f"train.distribute: 'multi_worker' needs ${NUM_WORKERS_ENV} >= 2 and "
                          f"${ADDRESSES_ENV} in every worker's environment (got {cluster.num_workers} worker)")
    if setting == "default" and several:
        raise ConfigError(f"train.distribute: 'default' trains on one device, but ${NUM_WORKERS_ENV}="
                          f"{cluster.num_workers} starts several workers; use 'multi_worker' or 'auto'")
    return "multi_worker" if several else "default"


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}") from None


def make_strategy(mode: str):
    """The ``tf.distribute`` strategy for ``mode`` (from :func:`distribution_mode`): Mirrored
    for ``mirrored``, or ``auto`` with more than one local GPU; else the default (one device)."""
    import tensorflow as tf

    apply_keras_workarounds()  # Keras under a strategy: see components/compat.py
    if mode == "mirrored" or (mode == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_default_strategy(strategy) -> bool:
    """Whether ``strategy`` (from :func:`make_strategy`, or None off TensorFlow) places every
    step on one device as is: None or TensorFlow's default strategy, not a Mirrored one."""
    if strategy is None:
        return True
    import tensorflow as tf

    return strategy is tf.distribute.get_strategy()  # the default strategy is one object, outside any scope


def start_workers(cluster: Cluster) -> None:
    """Join the other workers (``jax.distributed``) and make Keras place every step on all of
    them. Call before JAX runs anything; returns once every worker has joined (or raises
    after :data:`JOIN_TIMEOUT_S`).

    ``jax.distributed.initialize`` is called here rather than through
    ``keras.distribution.initialize`` (which reads the same variables and calls it) for its
    timeouts: with JAX's defaults a worker whose peer was killed waits 300 s at exit;
    with :data:`PEER_TIMEOUT_S` it fails within about half a minute. (Keras' wrapper also
    draws a shared random seed; the trainer seeds every worker from the recipe instead.)
    ``auto_shard_dataset`` is off: each worker reads its own shard files (:func:`worker_shards`).
    """
    import jax
    import keras

    jax.distributed.initialize(coordinator_address=cluster.addresses.split(",")[0],
                               num_processes=cluster.num_workers, process_id=cluster.worker,
                               initialization_timeout=JOIN_TIMEOUT_S, heartbeat_timeout_seconds=PEER_TIMEOUT_S,
                               shutdown_timeout_seconds=PEER_TIMEOUT_S)
    distribution = keras.distribution.DataParallel()
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)


def worker_shards(num_shards: int, cluster: Cluster, worker: int | None = None) -> list[int]:
    """The shard files of ``worker`` (default: this one): shard ``i`` goes to worker ``i mod N``."""
    if num_shards < cluster.num_workers:
        raise ConfigError(f"{cluster.num_workers} workers need at least as many train shards; the data set has "
                          f"{num_shards} (prepare.num_shards.train)")
    worker = cluster.worker if worker is None else worker
    return list(range(worker, num_shards, cluster.num_workers))


def local_batch_size(global_batch: int, cluster: Cluster) -> int:
    """Each worker's share of the recipe's (global) batch; ConfigError unless it divides evenly."""
    if global_batch % cluster.num_workers:
        raise ConfigError(f"recipe batch_size {global_batch} is the global batch; it must divide evenly among "
                          f"{cluster.num_workers} workers")
    return global_batch // cluster.num_workers


def worker_steps_per_epoch(shard_examples: Sequence[int], cluster: Cluster, local_batch: int) -> int:
    """Full local batches per epoch that EVERY worker can draw from its own shards (the smallest
    worker's count), so all workers step together; each worker computes the same figure."""
    counts = [sum(shard_examples[i] for i in worker_shards(len(shard_examples), cluster, w))
              for w in range(cluster.num_workers)]
    return min(counts) // local_batch


# ----------------------------------------------------------------------------------------------
# Collectives between the workers (JAX, after start_workers). Every worker must call each one.

def barrier(name: str) -> None:
    """Wait until every worker reaches the barrier called ``name``."""
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def gather(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """Every worker's ``values`` (the same length on all), stacked by worker: shape ``[N, ...]``."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values), tiled=False))


def check_shared_directory(directory: pathlib.Path, cluster: Cluster) -> None:
    """Check that every worker sees the chief's files in ``directory`` (resume reads the
    chief's checkpoints on every worker): the chief writes a random token there, every worker
    reads it back and the tokens are compared. ConfigError on the worker that cannot see it."""
    token_file = directory / SHARED_TOKEN_FILE
    token = secrets.token_bytes(16)
    if cluster.is_chief:
        directory.mkdir(parents=True, exist_ok=True)
        token_file.write_bytes(token)
    barrier("checkpoint-directory-written")
    try:
        seen = token_file.read_bytes()
    except OSError:
        seen = b""
    tokens = gather(np.frombuffer(seen.ljust(16, b"\0")[:16], np.uint8))
    barrier("checkpoint-directory-read")
    if cluster.is_chief:
        token_file.unlink(missing_ok=True)
    blind = [w for w in range(cluster.num_workers) if bytes(tokens[w]) != bytes(tokens[0])]
    if blind:
        raise ConfigError(f"train.checkpoints_dir: worker(s) {blind} do not see the chief's files in {directory}; "
                          f"several workers need a checkpoint directory they all share (a shared file system), "
                          f"because every worker resumes from the chief's checkpoint")
