"""Choosing the tf.distribute strategy: one device, all local GPUs, or several machines."""
from __future__ import annotations

import json
import os

from components.compat import apply_keras_workarounds
from components.config import ConfigError


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` (empty when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}") from None


def is_chief() -> bool:
    """Whether this process writes outputs: the chief, or worker 0 when there is no chief."""
    config = tf_config()
    task = config.get("task") or {}
    if not task:
        return True
    if "chief" in (config.get("cluster") or {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def make_strategy(kind: str = "auto"):
    """``auto``: MultiWorkerMirrored when TF_CONFIG names several tasks, Mirrored with more
    than one local GPU, else the default strategy (one device)."""
    import tensorflow as tf

    cluster = tf_config().get("cluster") or {}
    tasks = sum(len(v) for v in cluster.values())
    gpus = tf.config.list_physical_devices("GPU")
    apply_keras_workarounds()  # Keras under a strategy: see components/compat.py
    if kind == "multi_worker" or (kind == "auto" and tasks > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
