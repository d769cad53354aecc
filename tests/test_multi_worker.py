"""Several workers train one model: Keras on JAX with keras.distribution, two worker processes
on loopback (components/training/distribute.py), and the settings that cannot work."""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from components.config import ConfigError
from components.training.distribute import (Cluster, cluster_from_env, distribution_mode, local_batch_size,
                                            worker_shards, worker_steps_per_epoch)
from tests.conftest import prepare_synthetic
from tests.test_training import write_params as training_params

EPOCHS = 4
GLOBAL_BATCH = 32
EPOCH_LINE = re.compile(r"^\[train (\d)/2\] epoch (\d+): val_loss (\S+)  val_acc (\S+)  weights sha256 ([0-9a-f]{64})$",
                        re.M)


# ----------------------------------------------------------------------------------------------- the cluster
def test_the_cluster_comes_from_keras_variables_and_bad_values_are_named():
    assert cluster_from_env({}) == Cluster(1, 0, None)
    cluster = cluster_from_env({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234",
                                "KERAS_DISTRIBUTION_NUM_PROCESSES": "3", "KERAS_DISTRIBUTION_PROCESS_ID": "2"})
    assert (cluster.num_workers, cluster.worker, cluster.is_chief, cluster.tag) == (3, 2, False, "[train 2/3]")
    cases = [({"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"}, "$KERAS_DISTRIBUTION_NUM_PROCESSES: expected an integer, got 'two'"),
             ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "2",
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1"}, "expected a worker index from 0 to 1"),
             ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, "needs $KERAS_DISTRIBUTION_JOB_ADDRESSES"),
             ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_JOB_ADDRESSES": "a:1,b:2,c:3"},
              "3 addresses for $KERAS_DISTRIBUTION_NUM_PROCESSES=2 workers")]
    for environ, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            cluster_from_env(environ)


def test_what_train_distribute_means_on_each_backend():
    one, two = Cluster(), Cluster(2, 1, "127.0.0.1:1")
    assert distribution_mode("auto", "jax", two) == "multi_worker"
    assert distribution_mode("multi_worker", "jax", two) == "multi_worker"
    assert distribution_mode("auto", "jax", one) == "default"
    assert distribution_mode("mirrored", "tensorflow", one) == "mirrored"
    assert distribution_mode("auto", "tensorflow", one) == "auto"  # make_strategy counts the GPUs
    refused = [("multi_worker", "tensorflow", two, "Keras 3 does not support MultiWorkerMirroredStrategy with fit"),
               ("auto", "tensorflow", two, "train several workers with train.backend: jax"),
               ("mirrored", "jax", one, "train.distribute: 'mirrored' is a tf.distribute strategy"),
               ("multi_worker", "jax", one, "'multi_worker' needs $KERAS_DISTRIBUTION_NUM_PROCESSES >= 2"),
               ("default", "jax", two, "'default' trains on one device, but $KERAS_DISTRIBUTION_NUM_PROCESSES=2")]
    for setting, backend, cluster, message in refused:
        with pytest.raises(ConfigError, match=re.escape(message)):
            distribution_mode(setting, backend, cluster)


def test_tf_config_with_several_tasks_is_refused_on_tensorflow(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ConfigError, match=r"'auto' with 2 worker\(s\) on the TensorFlow backend"):
        distribution_mode("auto", "tensorflow", Cluster())


def test_each_worker_gets_its_shards_its_share_of_the_batch_and_a_common_epoch():
    two = Cluster(2, 1, "h:1")
    assert worker_shards(5, two) == [1, 3] and worker_shards(5, two, worker=0) == [0, 2, 4]
    assert local_batch_size(32, two) == 16
    # worker 0: 149 + 159 = 308 examples, worker 1: 138 + 112 = 250: 250 // 16 = 15 steps for both
    assert worker_steps_per_epoch([149, 138, 159, 112], two, 16) == 15
    with pytest.raises(ConfigError, match="recipe batch_size 33 is the global batch; it must divide evenly among 2"):
        local_batch_size(33, two)
    with pytest.raises(ConfigError, match=r"2 workers need at least as many train shards; the data set has 1"):
        worker_shards(1, two)


# ------------------------------------------------------------------------------- two processes on loopback
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    prepare_synthetic(root / "data" / "cifar10", 640, 128, {"train": 4, "validation": 2, "test": 1})
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_params(root: pathlib.Path, prepared: pathlib.Path) -> pathlib.Path:
    """test_training's params (LeNet-5, SGD 0.05 momentum 0.9, cosine, batch 32) on JAX, deterministic,
    for EPOCHS epochs, with outputs under ``root`` and the prepared data linked in."""
    (root / "data").symlink_to(prepared / "data")
    return training_params(root, epochs=EPOCHS, backend="jax", deterministic=True)


def launch(params: pathlib.Path, port: int, tag: str, tracking_uri: str | None = None) -> list[subprocess.Popen]:
    """Both workers of the same command (``python -m pipeline.train ...``), each with its
    KERAS_DISTRIBUTION_* variables; stdout and stderr to files named by ``tag``. Tracked in
    MLflow at ``tracking_uri`` (by the chief), else ``--no-tracking``."""
    workers = []
    for worker in range(2):
        env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
               "KERAS_DISTRIBUTION_PROCESS_ID": str(worker), **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})}
        with open(params.parent / f"{tag}.{worker}.out", "w") as out, open(params.parent / f"{tag}.{worker}.err", "w") as err:
            workers.append(subprocess.Popen([sys.executable, "-m", "pipeline.train", "--experiment", "tiny",
                                             "--params", str(params), *([] if tracking_uri else ["--no-tracking"])],
                                            cwd=params.parent, env=env, stdout=out, stderr=err))
    return workers


def outputs(params: pathlib.Path, tag: str) -> list[tuple[str, str]]:
    return [((params.parent / f"{tag}.{w}.out").read_text(), (params.parent / f"{tag}.{w}.err").read_text())
            for w in range(2)]


def finish(workers: list[subprocess.Popen], params: pathlib.Path, tag: str) -> list[str]:
    """Wait for both workers; both must succeed. Returns their stdouts."""
    codes = [worker.wait(timeout=600) for worker in workers]
    texts = outputs(params, tag)
    for code, (_, err) in zip(codes, texts):
        assert code == 0, err[-3000:]
    return [out for out, _ in texts]


def epoch_figures(stdout: str) -> dict[int, tuple[float, float, str]]:
    """Each epoch's validation loss, accuracy and weights digest as one worker logged them."""
    return {int(epoch): (float(loss), float(accuracy), digest)
            for _, epoch, loss, accuracy, digest in EPOCH_LINE.findall(stdout)}


def exported_weights(root: pathlib.Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(root / "models" / "tiny" / "model.keras").get_weights()


def test_two_workers_train_one_model_and_resume_together_after_kill_9(prepared, tmp_path):
    """Each worker reads its own train shards; after every epoch both hold the same weights
    and report the same validation figures, over the whole split; the global batch and the
    learning rate are the recipe's. One worker killed with kill -9, both restarted with the
    same command: both resume after the same epoch and end where the uninterrupted run ended."""
    from components.training.config import OptimizerConfig, ScheduleConfig
    from components.training.schedules import build_schedule
    from components.training.trainer import weights_digest

    info = json.loads((prepared / "data" / "cifar10" / "prepare_info.json").read_text())
    shard_examples = [shard["examples"] for shard in info["splits"]["train"]["shards"]]
    per_worker = [shard_examples[0] + shard_examples[2], shard_examples[1] + shard_examples[3]]
    steps = min(per_worker) // (GLOBAL_BATCH // 2)

    # Uninterrupted, tracked: the chief alone logs and registers the model in MLflow.
    whole = tmp_path / "whole"
    whole.mkdir()
    params = write_params(whole, prepared)
    tracking_uri = f"sqlite:///{whole / 'mlflow.db'}"
    stdouts = finish(launch(params, free_port(), "run", tracking_uri), params, "run")
    for worker, (stdout, shards) in enumerate(zip(stdouts, ([0, 2], [1, 3]))):
        assert f"worker {worker} of 2: train shards {shards} ({per_worker[worker]} examples), 16 of each global " \
               f"batch of {GLOBAL_BATCH}" in stdout
        assert f"{EPOCHS} epochs x {steps} steps of {GLOBAL_BATCH}, 2 replica(s), 2 workers (this is worker " \
               f"{worker})" in stdout
    figures = [epoch_figures(stdout) for stdout in stdouts]
    assert sorted(figures[0]) == list(range(1, EPOCHS + 1))
    assert figures[0] == figures[1]  # every epoch: same weights, same validation loss and accuracy
    assert len({digest for _, _, digest in figures[0].values()}) == EPOCHS  # and they did train
    metrics = json.loads((whole / "models" / "tiny" / "train_metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["steps_per_epoch"] == steps
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])
    assert run.info.run_id == metrics["mlflow_run_id"] and run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == \
        pytest.approx([figures[0][epoch][1] for epoch in range(1, EPOCHS + 1)], abs=1e-6)
    assert metrics["registered_model_version"] == "1" and "[mlflow] run" in stdouts[0] and "[mlflow]" not in stdouts[1]
    # The exported model is the best epoch's, as both workers saw it.
    best_epoch = max(figures[0], key=lambda epoch: figures[0][epoch][1])
    assert metrics["best_epoch"] == best_epoch and metrics["weights_sha256"] == figures[0][best_epoch][2]
    import keras

    assert weights_digest(keras.saving.load_model(whole / "models" / "tiny" / "model.keras")) == metrics["weights_sha256"]
    # The recipe's learning rate over the recipe's global batches: history.csv has each epoch's last step's rate.
    import csv

    with open(whole / "models" / "tiny" / "history.csv") as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    schedule = build_schedule(OptimizerConfig(learning_rate=0.05), ScheduleConfig(name="cosine"), steps, EPOCHS)
    expected = [float(schedule(steps * epoch - 1)) for epoch in range(1, EPOCHS + 1)]
    np.testing.assert_allclose(rates, expected, rtol=0, atol=5e-7)  # history.csv keeps 6 decimals
    assert not (whole / "checkpoints" / "tiny").exists()  # finished: the chief removed its checkpoints

    # Killed: worker 1 gets SIGKILL once the chief has committed epoch 2.
    killed = tmp_path / "killed"
    killed.mkdir()
    params = write_params(killed, prepared)
    port = free_port()
    workers = launch(params, port, "first")
    committed = killed / "checkpoints" / "tiny" / "epoch-0002"
    deadline = time.monotonic() + 600
    while not committed.is_dir():
        assert all(worker.poll() is None for worker in workers), outputs(params, "first")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(workers[1].pid, signal.SIGKILL)
    # The chief fails by itself (its peer is gone), within the peer timeout.
    chief_code = workers[0].wait(timeout=180)
    assert workers[1].wait() == -signal.SIGKILL and chief_code != 0
    assert not (killed / "models" / "tiny").exists()

    # The same command again, on both workers.
    stdouts = finish(launch(params, port, "again"), params, "again")
    resumed = [re.search(r"resuming tiny after epoch (\d+) of 4 at optimizer step (\d+)", stdout) for stdout in stdouts]
    assert all(resumed), stdouts
    after = {int(match.group(1)) for match in resumed}
    assert len(after) == 1 and next(iter(after)) >= 2  # both resume after the same epoch, at least the second
    resumed_after = next(iter(after))
    assert {int(match.group(2)) for match in resumed} == {resumed_after * steps}
    again = [epoch_figures(stdout) for stdout in stdouts]
    assert again[0] == again[1] and sorted(again[0]) == list(range(resumed_after + 1, EPOCHS + 1))
    for epoch, (loss, accuracy, _) in again[0].items():  # as the uninterrupted run, within float tolerance
        np.testing.assert_allclose((loss, accuracy), figures[0][epoch][:2], rtol=1e-5, atol=1e-6)
    resumed_metrics = json.loads((killed / "models" / "tiny" / "train_metrics.json").read_text())
    assert resumed_metrics["epochs"] == EPOCHS and resumed_metrics["best_epoch"] == best_epoch
    for resumed_weights, whole_weights in zip(exported_weights(killed), exported_weights(whole), strict=True):
        np.testing.assert_allclose(resumed_weights, whole_weights, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- each worker's input
def test_read_split_reads_the_shards_it_is_given(prepared):
    from components.inputs.arrays import read_split

    data_dir = prepared / "data" / "cifar10"
    images, labels = read_split(data_dir, "train")
    parts = [read_split(data_dir, "train", shards=worker_shards(4, Cluster(2, w, "h:1"))) for w in range(2)]
    info = json.loads((data_dir / "prepare_info.json").read_text())
    counts = [shard["examples"] for shard in info["splits"]["train"]["shards"]]
    assert [len(part[0]) for part in parts] == [counts[0] + counts[2], counts[1] + counts[3]]

    def rows(images_, labels_):  # every example as bytes, in a canonical order
        return sorted(image.tobytes() + bytes([label]) for image, label in zip(images_, labels_))

    assert rows(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])) == rows(images, labels)
    with pytest.raises(ValueError, match=r"shards must be indices of split 'train''s 4 shard files, got \[4\]"):
        read_split(data_dir, "train", shards=[4])


def test_device_batches_with_a_shorter_epoch_and_a_worker_stream():
    from components.inputs.device import DeviceBatches, generator

    images = np.arange(100 * 2 * 2 * 1, dtype=np.uint8).reshape(100, 2, 2, 1)
    labels = np.arange(100) % 10

    def batches(**kwargs):
        return DeviceBatches(images, labels, num_classes=10, batch_size=10, training=True, seed=7, **kwargs)

    plain, short, worker = batches(), batches(epoch_steps=3), batches(epoch_steps=3, stream=("worker", 1))
    assert plain.steps_per_epoch == 10 and short.steps_per_epoch == 3
    assert short.epoch_and_step(3) == (1, 0)  # batch 3 opens epoch 1: an epoch is 3 batches
    np.testing.assert_array_equal(short.batch_indices(3), generator(7, "records", 1).permutation(100)[:10])
    np.testing.assert_array_equal(plain.batch_indices(0), short.batch_indices(0))  # the default stream's keys
    np.testing.assert_array_equal(worker.batch_indices(3), generator(7, "worker", 1, "records", 1).permutation(100)[:10])
    assert not np.array_equal(worker.batch_indices(0), short.batch_indices(0))
    resumed = batches(epoch_steps=3, start_epoch=1, stream=("worker", 1))
    np.testing.assert_array_equal(resumed.batch_indices(0), worker.batch_indices(3))
    with pytest.raises(ValueError, match=r"epoch_steps 11 must be a training stream's number of full batches, 1 to 10"):
        batches(epoch_steps=11)
