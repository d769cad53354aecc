"""The pipeline feeds a Keras model under MirroredStrategy on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises its devices, which the
other tests have long done in this process, so the check runs in a fresh interpreter.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.test_inputs import prepared_dir

SCRIPT = r"""
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from components.inputs import (InputConfig, build_dataset, check_prepared, distributed_dataset,
                               normalization_layer, steps_per_epoch)

data_dir = sys.argv[1]
info = check_prepared(data_dir)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
config = InputConfig(batch_size=32, augment=["standard", "cutout"], repeat=True)
eval_config = InputConfig(batch_size=32)
with strategy.scope():
    model = keras.Sequential([
        keras.Input(tuple(info["image_shape"]), dtype="uint8"),
        normalization_layer(info, config),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(info["num_classes"]),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
steps = steps_per_epoch(info, "train", config.batch_size, drop_remainder=True)
result = {"replicas": strategy.num_replicas_in_sync}

# The input-context route: per-replica batches, files sharded across input pipelines.
train = distributed_dataset(strategy, data_dir, "train", config, training=True)
per_replica = next(iter(train))[0]
result["per_replica_batch"] = [int(t.shape[0]) for t in strategy.experimental_local_results(per_replica)]
history = model.fit(train, epochs=2, steps_per_epoch=steps, verbose=0)
result["losses"] = history.history["loss"]
validation = distributed_dataset(strategy, data_dir, "validation", eval_config, training=False)
result["evaluate"] = model.evaluate(validation, verbose=0, return_dict=True)

# The plain route: Keras splits global batches across the replicas itself.
plain = build_dataset(data_dir, "train", config, training=True)
result["plain_losses"] = model.fit(plain, epochs=1, steps_per_epoch=steps, verbose=0).history["loss"]
print("RESULT " + json.dumps(result))
"""


def test_pipeline_trains_a_model_under_mirrored_strategy(tmp_path_factory):
    data_dir = prepared_dir(tmp_path_factory, "cifar10")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir)], capture_output=True, text=True,
                               env=env, cwd=REPO, timeout=240)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    assert result["per_replica_batch"] == [16, 16]  # global batch 32 over two replicas
    losses = result["losses"] + result["plain_losses"]
    assert all(0 < loss < 10 for loss in losses), losses
    assert 0 <= result["evaluate"]["accuracy"] <= 1 and result["evaluate"]["loss"] < 10
