"""``bench prepare``: our Beam conversion against the tutorials' plain single-process loop.

The baseline reads the same archive and writes one TFRecord file per split with
``tf.train.Example`` and ``tf.io.TFRecordWriter``, as the seed tutorials do. It does no
validation, no split, no statistics and no sharding; ours does all of them.
"""
from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time


from components.config import load_section
from components.data.datasets import get_dataset
from components.data.prepare import (PrepareConfig, make_runner, pipeline_options, prepare_dataset,
                                     resolved_running_mode)
from components.data.sources import ArchiveSource


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--raw-dir", help="default: <raw_root>/<dataset> from params")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the best time counts")


def plain_loop(spec, raw_dir: str, out_dir: pathlib.Path) -> None:
    """The tutorials' way: one Example per image, built with TF's protos, one file per split."""
    import tensorflow as tf

    writers = {split: tf.io.TFRecordWriter(str(out_dir / f"{spec.name}-{split}.tfrecord")) for split in ("train", "test")}
    for block in ArchiveSource(spec, raw_dir).read_blocks():
        writer = writers[block.split]
        for image, label in zip(block.images, block.labels):
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }))
            writer.write(example.SerializeToString())
    for writer in writers.values():
        writer.close()


def empty_pipeline(config: PrepareConfig) -> None:
    """A pipeline that does nothing, on the same runner and workers: Beam's fixed cost."""
    import apache_beam as beam

    options = pipeline_options(config, [])
    with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
        pipeline | beam.Create([0, 1]) | beam.Map(lambda x: x)


def _best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            function(pathlib.Path(scratch))
            times.append(time.perf_counter() - started)
    return min(times)


def _mode_name(running_mode: str, workers: int) -> str:
    """``in_memory``, or ``<mode> x<workers>`` for the modes that run workers."""
    return running_mode if running_mode == "in_memory" else f"{running_mode} x{workers}"


def run(args) -> dict:
    import tensorflow  # noqa: F401  imported before timing, so neither side pays for it

    config = load_section(PrepareConfig, "prepare", args.params)
    spec = get_dataset(args.dataset)
    raw_dir = args.raw_dir or str(pathlib.Path(config.raw_root) / args.dataset)
    quiet = dict(log=lambda *_: None)
    baseline_s = _best_time(lambda out: plain_loop(spec, raw_dir, out), args.repeats)
    source = dataclasses.replace(config, source="archive")
    default_mode = resolved_running_mode(source, ArchiveSource(spec, raw_dir))
    ours_s = _best_time(lambda out: prepare_dataset(args.dataset, source, raw_dir, str(out / "o"), **quiet), args.repeats)
    # The other mode, for comparison: two worker processes when the default is one process, else one process.
    other = (dataclasses.replace(source, direct_running_mode="multi_processing", direct_num_workers=2)
             if default_mode == "in_memory" else dataclasses.replace(source, direct_running_mode="in_memory"))
    other_s = _best_time(lambda out: prepare_dataset(args.dataset, other, raw_dir, str(out / "o"), **quiet),
                         args.repeats)
    empty_s = _best_time(lambda _: empty_pipeline(dataclasses.replace(config, direct_running_mode=default_mode)),
                         args.repeats)
    return {
        "benchmark": "prepare", "dataset": args.dataset,
        "plain_loop_s": round(baseline_s, 2),
        "ours_s": round(ours_s, 2),
        "ours_mode": f"{config.direct_running_mode}: {_mode_name(default_mode, config.direct_num_workers)}",
        "ratio": round(ours_s / baseline_s, 2),
        "empty_pipeline_s": round(empty_s, 2),  # Beam's fixed cost in the same mode: worker start and exit
        "other_mode": _mode_name(other.direct_running_mode, other.direct_num_workers),
        "other_mode_s": round(other_s, 2),
        "ratio_other_mode": round(other_s / baseline_s, 2),
        "target_ratio_max": 1.0,
    }
