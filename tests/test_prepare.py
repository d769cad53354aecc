"""The prepare stage end to end: synthetic, tiny archives, a slice of real data, reruns,
a second Beam runner, and every kind of bad input."""
import dataclasses
import gzip
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from components.data import DataError, schema
from components.data.info import INFO_FILE
from components.data.prepare import (PrepareConfig, SyntheticConfig, make_runner, pipeline_options, prepare_dataset,
                                     process_is_alive)
from pipeline import prepare as prepare_cli
from tests.conftest import REPO, read_tar_gz_entries, require_shared, write_idx_labels, write_tar_gz_entries

FAST = PrepareConfig(direct_running_mode="in_memory", direct_num_workers=1,
                     num_shards={"train": 3, "validation": 1, "test": 2}, block_size=128)


def read_split(out_dir: pathlib.Path, dataset: str, split: str) -> dict[str, tuple[np.ndarray, int]]:
    """key -> (image, label) for every record of a split, checking shard names as it goes."""
    info = json.loads((out_dir / INFO_FILE).read_text())
    examples = {}
    for shard in info["splits"][split]["shards"]:
        records = list(schema.iter_tfrecords(str(out_dir / shard["file"])))
        assert len(records) == shard["examples"]
        if records:
            parsed = tf.io.parse_example(records, schema.tf_feature_spec())
            images = tf.io.decode_raw(parsed["image"], tf.uint8).numpy().reshape(-1, *info["image_shape"])
            keys = [k.decode() for k in parsed["key"].numpy()]
            assert keys == sorted(keys)  # records sorted by key within a shard
            examples.update(zip(keys, zip(images, parsed["label"].numpy().tolist())))
    return examples


def test_archive_end_to_end_keeps_every_example_once(tmp_path, mnist_dir):
    raw_dir, data = mnist_dir
    out = tmp_path / "out"
    info = prepare_dataset("mnist", FAST, str(raw_dir), str(out), log=lambda *_: None)
    # tensorflow-datasets' metadata (dataset_info.json, features.json, the label names) beside ours
    assert sorted(p.name for p in out.iterdir()) == sorted([INFO_FILE, "dataset_info.json", "features.json",
                                                            "label.labels.txt"] + [
        f"mnist-{split}.tfrecord-{i:05d}-of-{n:05d}" for split, n in (("test", 2), ("train", 3), ("validation", 1))
        for i in range(n)])
    train, validation, test = (read_split(out, "mnist", s) for s in ("train", "validation", "test"))
    assert len(train) + len(validation) == 300 and len(test) == 100
    assert not set(train) & set(validation)
    images, labels = data["train"]
    for key, (image, label) in {**train, **validation}.items():
        index = int(key.split("/")[1])
        assert label == labels[index]
        np.testing.assert_array_equal(image, images[index])
    assert info["splits"]["train"]["examples"] == len(train)
    assert sum(info["splits"]["validation"]["class_counts"]) == len(validation)
    train_pixels = np.stack([image for image, _ in train.values()]).astype(np.float64)
    np.testing.assert_allclose(info["train_statistics"]["mean"], [train_pixels.mean()], rtol=1e-9)
    np.testing.assert_allclose(info["train_statistics"]["std"], [train_pixels.std()], rtol=1e-9)
    assert info["source"]["kind"] == "archive"
    assert info["schema_version"] == schema.SCHEMA_VERSION


def shard_bytes(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_reruns_and_worker_modes_give_identical_bytes(tmp_path, cifar10_dir):
    raw_dir, _ = cifar10_dir
    first, second, parallel = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare_dataset("cifar10", FAST, str(raw_dir), str(first), log=lambda *_: None)
    prepare_dataset("cifar10", FAST, str(raw_dir), str(second), log=lambda *_: None)
    multi = dataclasses.replace(FAST, direct_running_mode="multi_processing", direct_num_workers=2, block_size=64)
    prepare_dataset("cifar10", multi, str(raw_dir), str(parallel), log=lambda *_: None)
    three_parts = tmp_path / "d"  # more parts than workers, read one after the other
    prepare_dataset("cifar10", dataclasses.replace(FAST, read_parts=3), str(raw_dir), str(three_parts),
                    log=lambda *_: None)
    assert shard_bytes(first) == shard_bytes(second) == shard_bytes(parallel) == shard_bytes(three_parts)


def test_the_direct_runner_is_beams_fnapi_runner_never_prism(tmp_path, mnist_dir, caplog):
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    assert isinstance(make_runner(pipeline_options(FAST, [])), FnApiRunner)
    assert make_runner(pipeline_options(FAST, ["--runner=DaskRunner"])) is None  # other runners are Beam's to build
    caplog.set_level("INFO")
    prepare_dataset("mnist", FAST, str(mnist_dir[0]), str(tmp_path / "out"), log=lambda *_: None)
    # Beam's own DirectRunner would first try to download and run Prism.
    assert not [r for r in caplog.records if "Prism" in r.getMessage()]


def test_dask_runner_on_two_worker_processes_writes_the_same_shards(tmp_path, cifar10_dir):
    """DaskRunner over a dask.distributed cluster of two worker processes, the archive read in
    two parts: the shards are the DirectRunner's, byte for byte, and both workers did work."""
    import distributed  # a declared dependency (apache-beam[dask]): missing or broken must fail, not skip

    raw_dir, _ = cifar10_dir
    direct, dask = tmp_path / "direct", tmp_path / "dask"
    prepare_dataset("cifar10", FAST, str(raw_dir), str(direct), log=lambda *_: None)
    two_parts = dataclasses.replace(FAST, read_parts=2)
    from components.benchmarks.prepare_scale import local_dask_cluster  # leaves no Dask environment behind

    with local_dask_cluster() as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
            prepare_dataset("cifar10", two_parts, str(raw_dir), str(dask), log=lambda *_: None,
                            beam_args=["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
        worker_pids = set(client.run(os.getpid).values())
    assert shard_bytes(direct) == shard_bytes(dask)
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids  # separate processes
    assert len({task["worker"] for task in tasks.data}) == 2  # each ran part of the conversion


def test_synthetic_source_through_the_cli(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  source: synthetic\n  direct_running_mode: in_memory\n"
                      "  synthetic: {train_examples: 200, test_examples: 40, seed: 1}\n")
    out = tmp_path / "synthetic"
    assert prepare_cli.main(["--dataset", "cifar10", "--params", str(params), "--out-dir", str(out),
                             "--raw-dir", str(tmp_path / "none")]) == 0
    info = json.loads((out / INFO_FILE).read_text())
    assert info["source"] == {"kind": "synthetic", "seed": 1, "examples": {"train": 200, "test": 40}}
    assert info["splits"]["train"]["examples"] + info["splits"]["validation"]["examples"] == 200
    assert info["splits"]["train"]["num_shards"] == 8


def test_real_fashion_mnist_slice(tmp_path):
    """The first 600 training and 200 test images of the real Fashion-MNIST files."""
    shared = require_shared("fashion-mnist")
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, count in (("train", 600), ("t10k", 200)):
        images = gzip.decompress((shared / f"{name}-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((shared / f"{name}-labels-idx1-ubyte.gz").read_bytes())
        (raw / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
            images[:4] + count.to_bytes(4, "big") + images[8:16] + images[16:16 + count * 784]))
        (raw / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
            labels[:4] + count.to_bytes(4, "big") + labels[8:8 + count]))
    info = prepare_dataset("fashion_mnist", FAST, str(raw), str(tmp_path / "out"), log=lambda *_: None)
    assert info["label_names"][9] == "Ankle boot"
    assert sum(info["splits"]["test"]["class_counts"]) == 200
    assert all(c > 0 for c in info["splits"]["train"]["class_counts"])
    assert 60 < info["train_statistics"]["mean"][0] < 80  # Fashion-MNIST's mean pixel is about 72.9


def run_cli(*args, params=None):
    return subprocess.run([sys.executable, "-m", "pipeline.prepare", *args] + (["--params", str(params)] if params else []),
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture
def fast_params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  direct_running_mode: in_memory\n  direct_num_workers: 1\n")
    return path


def assert_failed_cleanly(result, out: pathlib.Path, *fragments):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare: error: "), result.stderr  # one line, nothing else
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or (out / "previous-marker").exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.mark.parametrize("problem", ["missing", "truncated", "label-out-of-range"])
def test_bad_archives_fail_with_one_clear_message(tmp_path, mnist_dir, fast_params, problem):
    raw_dir, _ = mnist_dir
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous-marker").write_text("an earlier good output stays untouched")
    labels = raw_dir / "train-labels-idx1-ubyte.gz"
    if problem == "missing":
        labels.unlink()
        fragments = ["train-labels-idx1-ubyte.gz: file not found"]
    elif problem == "truncated":
        images = raw_dir / "train-images-idx3-ubyte.gz"
        images.write_bytes(images.read_bytes()[:5000])
        fragments = ["train-images-idx3-ubyte.gz: not a valid gzip file"]
    else:
        write_idx_labels(labels, np.full(300, 12))
        fragments = [f"prepare: error: {raw_dir / 'train-images-idx3-ubyte.gz'}: 300 example(s) failed validation "
                     "in mnist (max_rejected is 0): ", "label out of range [0, 10)"]
    result = run_cli("--dataset", "mnist", "--raw-dir", str(raw_dir), "--out-dir", str(out), params=fast_params)
    assert_failed_cleanly(result, out, *fragments)
    assert (out / "previous-marker").exists()


def test_a_worker_process_failing_still_gives_one_clear_message(tmp_path, cifar10_dir):
    raw_dir, _ = cifar10_dir
    archive = raw_dir / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 9 // 10])  # the second part fails
    out = tmp_path / "out"
    result = run_cli("--dataset", "cifar10", "--raw-dir", str(raw_dir), "--out-dir", str(out),
                     params=REPO / "params.yaml")  # two worker processes, as by default
    assert_failed_cleanly(result, out, "cifar-10-binary.tar.gz: truncated or corrupt tar.gz archive")
    assert not out.exists()


def test_a_repeated_tar_member_fails_every_part_in_one_line(tmp_path, cifar10_dir):
    raw_dir, _ = cifar10_dir
    archive = raw_dir / "cifar-10-binary.tar.gz"
    entries = read_tar_gz_entries(archive)
    again = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
    write_tar_gz_entries(archive, entries + [(again, bytes(3073))])  # a second reading, after every member
    out = tmp_path / "out"
    result = run_cli("--dataset", "cifar10", "--raw-dir", str(raw_dir), "--out-dir", str(out),
                     params=REPO / "params.yaml")  # two parts: the first stops before the repeat, the last does not
    assert_failed_cleanly(result, out)
    assert result.stderr == (f"prepare: error: {archive}: member 'cifar-10-batches-bin/data_batch_1.bin' appears "
                             "twice (members 1 and 8); each name must appear once\n")
    assert not out.exists()


def test_rejections_are_summed_per_file_on_one_line(tmp_path, mnist_dir):
    raw_dir, _ = mnist_dir
    train_labels = np.arange(300) % 10
    train_labels[[3, 200, 250]] = 11  # in blocks 1 and 2 of 128 examples: two reports, one line
    write_idx_labels(raw_dir / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx_labels(raw_dir / "t10k-labels-idx1-ubyte.gz", np.full(100, 10))
    with pytest.raises(DataError) as caught:
        prepare_dataset("mnist", FAST, str(raw_dir), str(tmp_path / "out"), log=lambda *_: None)
    test_file, train_file = raw_dir / "t10k-images-idx3-ubyte.gz", raw_dir / "train-images-idx3-ubyte.gz"
    assert str(caught.value) == (
        f"{test_file}: 103 example(s) failed validation in mnist (max_rejected is 0): "
        f"{test_file}: 100 example(s) rejected, label out of range [0, 10) (values [10]) (first: test/000000); "
        f"{train_file}: 3 example(s) rejected, label out of range [0, 10) (values [11]) (first: train/000003)")


def leftover_host() -> str:
    """This machine's name as prepare writes it into leftover names ('-' and other signs as '_')."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname())


def test_later_runs_remove_what_killed_runs_left_and_only_that(tmp_path):
    dead_process = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_process.wait()  # reaped: its pid names no process now
    live_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    dead, live, host = dead_process.pid, live_process.pid, leftover_host()
    try:
        assert not process_is_alive(dead) and process_is_alive(live) and process_is_alive(os.getpid())
        assert process_is_alive(0) and process_is_alive(-1)  # process groups, never "dead"
        out = tmp_path / "out"
        removed = [f".out.tmp-{dead}", f".out.tmp-{host}-{dead}", f".out.old-20240101120000-{host}-{dead}"]
        kept = [f".out.tmp-{live}", f".out.tmp-{host}-{live}", f".out.old-20240101120000-{host}-{live}",
                f".out.tmp-otherhost-{dead}",  # another machine's run on a shared mount: its pid means nothing here
                f".other.tmp-{dead}", f".out.tmp-{dead}.bak", "out.tmp-1", ".out.tmp-0", ".out.tmp-x"]
        for name in removed + kept:
            (tmp_path / name).mkdir()
            (tmp_path / name / "shard").write_bytes(bytes(1000))
        (tmp_path / f".out.old-20240101120000-{dead}").write_text("")  # a dead run's name, but a file
        logged = []
        config = dataclasses.replace(FAST, source="synthetic", synthetic=SyntheticConfig(100, 20))
        prepare_dataset("cifar10", config, str(tmp_path / "raw"), str(out), log=logged.append)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["out", f".out.old-20240101120000-{dead}"])
        for name in removed[:2]:
            assert f"[prepare] removed {tmp_path / name}, left by a killed run (pid {dead})" in logged
        # The parked previous output is the only copy while out is missing: kept, then removed once out exists.
        old = tmp_path / removed[2]
        assert logged.index(f"[prepare] kept {old}: a killed run (pid {dead}) parked the previous output there, "
                            f"and {out} is missing") < logged.index(
            f"[prepare] removed {old}, left by a killed run (pid {dead})")
        assert (tmp_path / f".out.tmp-{host}-{live}" / "shard").read_bytes() == bytes(1000)
    finally:
        live_process.kill()
        live_process.wait()


def test_max_rejected_lets_known_bad_examples_through(tmp_path, mnist_dir):
    raw_dir, _ = mnist_dir
    labels = np.arange(300) % 10
    labels[[5, 17]] = 200
    write_idx_labels(raw_dir / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="2 example"):
        prepare_dataset("mnist", FAST, str(raw_dir), str(tmp_path / "strict"), log=lambda *_: None)
    info = prepare_dataset("mnist", dataclasses.replace(FAST, max_rejected=2), str(raw_dir),
                           str(tmp_path / "lenient"), log=lambda *_: None)
    assert info["splits"]["train"]["examples"] + info["splits"]["validation"]["examples"] == 298


def test_unknown_dataset_and_unwritable_output(tmp_path, mnist_dir, fast_params):
    result = run_cli("--dataset", "mnits", params=fast_params)
    assert result.returncode == 1 and "unknown data set 'mnits'" in result.stderr and "Did you mean 'mnist'" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    raw_dir, _ = mnist_dir
    result = run_cli("--dataset", "mnist", "--raw-dir", str(raw_dir), "--out-dir", str(blocker / "out"),
                     params=fast_params)
    assert result.returncode == 1 and "output directory is not writable" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_params_are_rejected(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  validation_fration: 0.2\n")
    result = run_cli("--dataset", "mnist", params=params)
    assert result.returncode == 1
    assert "unknown key(s) ['validation_fration']" in result.stderr and "validation_fraction" in result.stderr
    params.write_text("prepare:\n  validation_fraction: 1.5\n")
    assert "validation_fraction must be in [0, 1), got 1.5" in run_cli("--dataset", "mnist", params=params).stderr
    params.write_text("prepare:\n  read_parts: -1\n")
    assert "read_parts must be >= 0" in run_cli("--dataset", "mnist", params=params).stderr


def test_auto_without_archives_offline_says_what_to_place_where(tmp_path, fast_params):
    result = run_cli("--dataset", "mnist", "--raw-dir", str(tmp_path / "empty"), "--out-dir",
                     str(tmp_path / "out"), params=fast_params)
    assert result.returncode == 1
    assert "Place the publisher's files (https://storage.googleapis.com/cvdf-datasets/mnist/) here and rerun" in result.stderr
    assert str(tmp_path / "empty" / "train-images-idx3-ubyte.gz") in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("dataset, shape, mean", [
    ("fashion_mnist", [28, 28, 1], [72.9]),  # Fashion-MNIST's published pixel mean, 0.2860 x 255
    ("cifar10", [32, 32, 3], [125.3, 123.0, 113.9]),  # CIFAR-10's well-known channel means
])
def test_full_real_data_sets(tmp_path, dataset, shape, mean):
    """The whole real data set from ../shared/datasets (placed in data/raw by `make raw-data`)."""
    raw = REPO / "data" / "raw" / dataset
    if not raw.is_dir():
        pytest.fail(f"{raw}: missing; `make raw-data` places it from ../shared/datasets")
    as_in_params = dataclasses.replace(FAST, block_size=5000, direct_running_mode="multi_processing",
                                       direct_num_workers=2)  # read in two parts, as params.yaml has it
    info = prepare_dataset(dataset, as_in_params, str(raw), str(tmp_path / dataset), log=lambda *_: None)
    splits = info["splits"]
    assert splits["train"]["examples"] + splits["validation"]["examples"] == (60000 if dataset == "fashion_mnist" else 50000)
    assert splits["test"]["class_counts"] == [1000] * 10  # both test sets are balanced
    assert 0.09 < splits["validation"]["examples"] / (splits["train"]["examples"] + splits["validation"]["examples"]) < 0.11
    assert info["image_shape"] == shape
    np.testing.assert_allclose(info["train_statistics"]["mean"], mean, atol=1.0)
    assert all(f["verified"] == "content-validated" for f in info["source"]["files"])  # recompressed / rebuilt copies


def test_prepare_benchmark_reports_both_sides(cifar10_dir):
    import argparse

    from components.benchmarks import prepare as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    result = bench.run(parser.parse_args(["--dataset", "cifar10", "--raw-dir", str(cifar10_dir[0]),
                                          "--params", str(REPO / "params.yaml")]))
    assert result["ours_mode"] == "auto: in_memory"  # what params.yaml runs by default, for a small archive
    assert result["other_mode"] == "multi_processing x2"
    assert min(result["plain_loop_s"], result["ours_s"], result["other_mode_s"], result["empty_pipeline_s"]) > 0
    assert result["ratio"] > 0 and result["target_ratio_max"] == 1.0  # times are rounded: tiny data, no exact ratio


def test_auto_running_mode_follows_the_cores_and_the_raw_files_size(cifar10_dir, monkeypatch):
    from components.data import prepare as prepare_module
    from components.data.datasets import get_dataset
    from components.data.sources import ArchiveSource, SyntheticSource

    raw_dir, _ = cifar10_dir
    archive_bytes = (raw_dir / "cifar-10-binary.tar.gz").stat().st_size
    archive = ArchiveSource(get_dataset("cifar10"), str(raw_dir))
    auto = dataclasses.replace(FAST, direct_running_mode="auto", direct_num_workers=2)
    resolve = prepare_module.resolved_running_mode
    assert prepare_module.PrepareConfig().direct_running_mode == "auto"
    monkeypatch.setattr(prepare_module.os, "cpu_count", lambda: 4)  # more cores than one process uses
    monkeypatch.setattr(prepare_module, "IN_PROCESS_MAX_RAW_BYTES", archive_bytes + 1)
    assert resolve(auto, archive) == "in_memory"
    monkeypatch.setattr(prepare_module, "IN_PROCESS_MAX_RAW_BYTES", archive_bytes)
    assert resolve(auto, archive) == "multi_processing"
    monkeypatch.setattr(prepare_module.os, "cpu_count", lambda: 2)  # as many as one process uses: any size
    assert resolve(auto, archive) == "in_memory"
    monkeypatch.setattr(prepare_module.os, "cpu_count", lambda: 4)
    assert resolve(dataclasses.replace(auto, direct_running_mode="in_memory"), archive) == "in_memory"  # chosen wins
    assert resolve(dataclasses.replace(auto, direct_num_workers=1), archive) == "in_memory"
    assert resolve(auto, SyntheticSource(get_dataset("cifar10"), 10, 10)) == "in_memory"  # one part only
    monkeypatch.setattr(prepare_module.os, "cpu_count", lambda: 1)
    assert resolve(auto, archive) == "in_memory"


def test_prepare_scale_archive_is_the_release_format_and_measure_reports_figures(tmp_path):
    """The scale benchmark's archive reads as CIFAR-10 (members, record layout, labels in range),
    and one measured conversion reports its time, images and the memory of its processes."""
    from components.benchmarks import prepare_scale
    from components.data.datasets import get_dataset
    from components.data.sources import ArchiveSource

    raw = tmp_path / "raw"
    archive = prepare_scale.write_cifar10_like_archive(raw, scale=2, member_records=30)
    assert prepare_scale.write_cifar10_like_archive(raw, scale=2, member_records=30) == archive  # kept, not rewritten
    blocks = list(ArchiveSource(get_dataset("cifar10"), str(raw)).read_blocks())
    assert sum(len(b) for b in blocks if b.split == "train") == 300 and sum(len(b) for b in blocks if b.split == "test") == 60
    assert {label for b in blocks for label in b.labels.tolist()} == set(range(10))
    figures = prepare_scale.measure(FAST, raw, tmp_path / "out", [])
    assert figures["images"] == 360 and figures["seconds"] > 0 and figures["peak_rss_mb"] > 50  # a Python with Beam
    # us_per_image comes from the unrounded time; "seconds" is rounded to 0.01 s (at most 0.005 s off)
    assert abs(figures["us_per_image"] - 1e6 * figures["seconds"] / 360) <= 1e6 * 0.005 / 360 + 0.005
    assert not (tmp_path / "out").exists()  # each conversion's output is removed after it is measured


def test_prepare_scale_on_dask_leaves_the_environment_as_it_was(tmp_path):
    """A Dask nanny leaves its workers' environment (MALLOC_TRIM_THRESHOLD_, one BLAS thread, ...)
    in the process that starts it; the benchmark puts it back, so the conversions it spawns after
    a Dask run do not inherit it (the trim threshold doubled the one-process conversion's time)."""
    from components.benchmarks import prepare_scale

    raw = tmp_path / "raw"
    prepare_scale.write_cifar10_like_archive(raw, scale=1, member_records=30)
    before = dict(os.environ)
    figures = prepare_scale._measure_on_dask(FAST, raw, tmp_path / "out")
    assert figures["images"] == 180 and figures["seconds"] > 0
    assert dict(os.environ) == before


def test_prepare_scale_interleaves_its_rounds_over_every_size_and_mode(tmp_path, monkeypatch, capsys):
    """With --repeats 2, each round converts every size in every mode once (round 1 all
    sizes, then round 2), and each size and mode reports its fastest run, every run's
    seconds in order and its largest memory; growth is the last size over the first."""
    import argparse

    from components.benchmarks import prepare_scale

    write = prepare_scale.write_cifar10_like_archive  # small members: 180 images at 1x, 360 at 2x
    monkeypatch.setattr(prepare_scale, "write_cifar10_like_archive",
                        lambda directory, scale: write(directory, scale, member_records=30))
    args = argparse.Namespace(scales=[1, 2], modes=["in_process"], params=str(REPO / "params.yaml"),
                              work_dir=str(tmp_path / "work"), repeats=2, plot=None, replot=None)
    result = prepare_scale.run(args)
    order = re.findall(r"round (\d)/2 (\d)x in_process", capsys.readouterr().err)
    assert order == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    for scale, images in (("1x", 180), ("2x", 360)):
        figures = result["sizes"][scale]["in_process"]
        assert figures["images"] == images and len(figures["seconds_all"]) == 2
        assert figures["seconds"] == min(figures["seconds_all"])
    first, last = result["sizes"]["1x"]["in_process"], result["sizes"]["2x"]["in_process"]
    assert result["growth"]["in_process"]["us_per_image"] == round(last["us_per_image"] / first["us_per_image"], 2)
    assert not list((tmp_path / "work").glob("out-*"))  # outputs removed; the archives kept for reuse
    assert sorted(p.name for p in (tmp_path / "work").glob("raw-*")) == ["raw-1x", "raw-2x"]
