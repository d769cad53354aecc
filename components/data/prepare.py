"""The prepare stage's library side: pick a source, run the Beam conversion, publish atomically.

:func:`prepare_dataset` is what ``python -m pipeline.prepare`` calls. It writes into a
temporary directory beside the output, adds tensorflow-datasets' metadata
(``dataset_info.json``, ``features.json``: :func:`write_tfds_metadata`) and then its own
``prepare_info.json`` (INFO_FILE, the completeness marker) last, and only then publishes,
so an interrupted or failed run never leaves a directory that looks complete. What a
killed run leaves beside the output (its temporary directory) is removed by the next
run, once the process that made it is gone (:func:`remove_dead_leftovers`).

The raw and output locations may be local paths or any URL Beam's ``FileSystems`` knows
(``gs://``, ``s3://``, ``hdfs://``): every read and write goes through
:mod:`components.data.storage`. On a local disk the finished directory is renamed into
place, so the previous good output stays whole until the new one replaces it. An object
store cannot rename a directory: there the previous output's INFO_FILE is deleted first
(it no longer looks complete), the new files are moved in, and INFO_FILE is written last.

Every DataError message is one line, ``<file>: <problem>``: the CLI prints it as
``prepare: error: <message>``.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import os
import pathlib
import re
import shutil
import socket
import time
import urllib.parse
from typing import Literal, Sequence

from components.data import schema, storage
from components.data.datasets import DatasetSpec, get_dataset
from components.data.errors import DataError
from components.data.info import INFO_FILE, OUTPUT_SPLITS
from components.data.sources import ArchiveSource, Source, SyntheticSource, TfdsSource
from components.data.transforms import (PIECES_DIR, REPORTS_DIR, build_conversion, channel_moments, read_reports,
                                        train_histogram)
from components.experiments import DEFAULT_DATA_ROOT



@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Size of the generated data set of the ``synthetic`` source (examples per split)."""

    train_examples: int = 2000
    test_examples: int = 500
    seed: int = 0

    def __post_init__(self):
        if self.train_examples < 1 or self.test_examples < 1:
            raise ValueError(f"synthetic sizes must be >= 1, got train_examples={self.train_examples}, "
                             f"test_examples={self.test_examples}")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """The ``prepare`` section of params.yaml."""

    datasets: list[str] = dataclasses.field(default_factory=lambda: ["fashion_mnist", "cifar10"])
    source: Literal["auto", "archive", "tfds", "synthetic"] = "auto"
    raw_root: str = "data/raw"  # archives are looked for in <raw_root>/<dataset>/
    out_root: str = DEFAULT_DATA_ROOT  # shards go to <out_root>/<dataset>/ (components.experiments reads them there)
    tfds_data_dir: str = "data/tfds"  # where the tfds source builds (and caches downloads)
    validation_fraction: float = 0.1  # of the publisher's train split, carved by a hash of each key
    seed: int = 0  # salts the validation and shard hashes
    num_shards: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"train": 8, "validation": 2, "test": 2})
    max_rejected: int = 0  # examples that may fail validation before the stage fails
    block_size: int = 5000  # examples per Beam element
    read_parts: int = 0  # parts the source is read in, in parallel; 0: one per DirectRunner worker
    runner: str = "DirectRunner"
    direct_num_workers: int = 2
    # auto: the fastest measured for the input at hand (resolved_running_mode)
    direct_running_mode: Literal["auto", "in_memory", "multi_threading", "multi_processing"] = "auto"
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)

    def __post_init__(self):
        for name in self.datasets:
            get_dataset(name)  # raises with the list of known names
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if set(self.num_shards) != set(OUTPUT_SPLITS) or min(self.num_shards.values()) < 1:
            raise ValueError(f"num_shards needs a count >= 1 for each of {list(OUTPUT_SPLITS)}, got {self.num_shards}")
        if self.max_rejected < 0 or self.read_parts < 0 or self.block_size < 1 or self.direct_num_workers < 1:
            raise ValueError("max_rejected and read_parts must be >= 0, block_size and direct_num_workers >= 1; "
                             f"got {self.max_rejected}, {self.read_parts}, {self.block_size}, "
                             f"{self.direct_num_workers}")

    def parts_to_read(self) -> int:
        """``read_parts``, or by default one part per worker process or thread of the DirectRunner.

        Every extra part of a tar.gz re-inflates the members before its own, so parts
        only pay where they run side by side.
        """
        if self.read_parts:
            return self.read_parts
        return 1 if self.direct_running_mode in ("in_memory", "auto") else self.direct_num_workers


# The cores one process keeps busy converting an archive: its own thread, which validates,
# splits, frames and writes, and the thread inflating the archive beside it
# (readers.InflatingReader). Measured on this project's 2-core machine (``bench prepare-scale``,
# README "How prepare scales"), one process is as fast as two worker processes at 40 times
# CIFAR-10's size (best of five: 59.5 s and 58.8 s; medians 61.9 s and 62.0 s) and faster below
# (10x: 11.7-12.8 s against 15.6-16.6 s; CIFAR-10 itself: 1.3 s against 2.9 s), at 0.4 times the
# memory: with no more cores than one process uses, worker processes only add their cost.
ONE_PROCESS_CORES = 2

# Where ``direct_running_mode: auto`` moves from one process to worker processes on a machine
# with more cores than ONE_PROCESS_CORES, in bytes of raw input. Measured before the inflating
# thread, on 2 cores: starting and stopping two worker processes costs about 1.2 s more than
# one process, and they tied with it at three times CIFAR-10's size (0.51 GiB). Not measured on
# a machine with more cores, where each worker adds cores one process cannot use.
IN_PROCESS_MAX_RAW_BYTES = 512 * 2**20


def resolved_running_mode(config: PrepareConfig, source: Source) -> str:
    """The DirectRunner mode to run ``source`` in: ``config.direct_running_mode``, or for ``auto``
    the fastest measured: one process on a machine with ONE_PROCESS_CORES cores or fewer, for the
    tfds and synthetic sources (read as one part, so a second worker would have nothing to read)
    and for archives under IN_PROCESS_MAX_RAW_BYTES; worker processes otherwise."""
    if config.direct_running_mode != "auto":
        return config.direct_running_mode
    if (not isinstance(source, ArchiveSource) or config.direct_num_workers < 2
            or (os.cpu_count() or 1) <= ONE_PROCESS_CORES):
        return "in_memory"
    raw_bytes = sum(storage.size(source.raw_path(raw.name)) for raw in source.spec.raw_files)
    return "in_memory" if raw_bytes < IN_PROCESS_MAX_RAW_BYTES else "multi_processing"


def resolve_source(spec: DatasetSpec, config: PrepareConfig, raw_dir: str) -> Source:
    """The source to read, following ``config.source``; ``auto`` prefers archives on disk."""
    archive = ArchiveSource(spec, raw_dir, config.block_size)
    some_archives_present = len(archive.missing_files()) < len(spec.raw_files)
    if config.source == "archive" or (config.source == "auto" and some_archives_present):
        return archive  # a partial set fails in describe(), naming the missing file
    if config.source == "synthetic":
        return SyntheticSource(spec, config.synthetic.train_examples, config.synthetic.test_examples,
                               config.synthetic.seed, config.block_size)
    tfds_source = TfdsSource(spec, config.tfds_data_dir, manual_dir=raw_dir, block_size=config.block_size)
    if config.source == "tfds":
        return tfds_source
    # auto without archives: use tfds if it can download, else say which files to place where.
    # Probing the host first matters offline: tfds retries a refused download for minutes.
    unreachable = _unreachable(spec.download_url)
    try:
        if unreachable:
            raise ConnectionError(unreachable)
        tfds_source.builder()
    except Exception as error:  # tfds raises many kinds (network, checksum, missing manual files)
        wanted = " ".join(storage.join(raw_dir, f.name) for f in spec.raw_files)
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise DataError(
            f"{raw_dir}: no {spec.name} archives here and tensorflow-datasets could not fetch them "
            f"({type(error).__name__}: {first_line}). "
            f"Place the publisher's files ({spec.download_url}) here and rerun: {wanted}") from None
    return tfds_source


def _unreachable(url: str, timeout_s: float = 3.0) -> str | None:
    """Why ``url``'s host cannot be reached within ``timeout_s`` seconds, or None if it can."""
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as error:
        return f"cannot reach {parsed.hostname}:{port} ({error})"
    return None


_RUNNER_ALIASES = {"--runner=DaskRunner": "--runner=apache_beam.runners.dask.dask_runner.DaskRunner"}
_DIRECT_RUNNER_PATH = "apache_beam.runners.direct.direct_runner.DirectRunner"


def pipeline_options(config: PrepareConfig, beam_args: Sequence[str]):
    """Beam options from params, overridden by any ``--runner``-style arguments given."""
    from apache_beam.options.pipeline_options import PipelineOptions

    # Beam knows DaskRunner only by its full path; accept the short name like the others.
    beam_args = [_RUNNER_ALIASES.get(a, a) for a in beam_args]
    defaults = {"runner": _RUNNER_ALIASES.get(f"--runner={config.runner}", config.runner).removeprefix("--runner=")}
    if config.runner == "DirectRunner":
        defaults.update(direct_num_workers=config.direct_num_workers)
        if config.direct_running_mode != "auto":  # resolved by prepare_dataset once the source is known
            defaults.update(direct_running_mode=config.direct_running_mode)
    return PipelineOptions(list(beam_args), **{k: v for k, v in defaults.items()
                                              if not any(a.startswith(f"--{k}") for a in beam_args)})


def make_runner(options):
    """The runner the options name; for the DirectRunner, Beam's FnApiRunner, never Prism.

    Beam's DirectRunner first tries the Prism runner, which it downloads from GitHub on
    first use: offline that is a failed download on every run, and online a different
    runner that ignores ``direct_num_workers`` and ``direct_running_mode``. So the
    DirectRunner is built here the way Beam's own builds its FnApiRunner fallback, with
    the options passed on to the workers. Other runners are Beam's to build (None).
    """
    from apache_beam.options.pipeline_options import StandardOptions

    if options.view_as(StandardOptions).runner not in ("DirectRunner", _DIRECT_RUNNER_PATH):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def prepare_dataset(name: str, config: PrepareConfig, raw_dir: str | None = None, out_dir: str | None = None,
                    beam_args: Sequence[str] = (), log=print) -> dict:
    """Convert data set ``name`` to sharded TFRecords, tfds metadata and INFO_FILE; return the info."""
    import apache_beam as beam

    spec = get_dataset(name)
    raw_dir = str(raw_dir or storage.join(config.raw_root, name))
    out = str(out_dir or storage.join(config.out_root, name)).rstrip("/")
    storage.use_options(pipeline_options(config, beam_args))  # the driver's reads and writes: same endpoints, credentials
    source = resolve_source(spec, config, raw_dir)
    log(f"[prepare] {name}: source {source.kind} ({getattr(source, 'raw_dir', '') or source.describe()})")
    if isinstance(source, ArchiveSource):
        source.check_present()  # before starting Beam, so a missing file is named at once
    config = dataclasses.replace(config, direct_running_mode=resolved_running_mode(config, source))
    options = pipeline_options(config, beam_args)

    remove_dead_leftovers(out, log)
    temp_dir = _make_temp_dir(out)
    started = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as background:
            # The raw files' checksums (0.1 s for CIFAR-10) need nothing from the
            # conversion, so they are computed while Beam starts its workers.
            described = background.submit(source.describe)
            with beam.Pipeline(runner=make_runner(options), options=options) as pipeline:
                build_conversion(pipeline, source, spec, temp_dir, config.validation_fraction,
                                 config.num_shards, config.seed, config.parts_to_read())
            source_info = described.result()
        for raw in source_info.get("files", []):
            log(f"[prepare]   {raw['name']}: {raw['verified']}")
        info = dataset_info(spec, read_reports(temp_dir), source_info, config)
        storage.delete_tree(storage.join(temp_dir, REPORTS_DIR))
        storage.delete_tree(storage.join(temp_dir, PIECES_DIR))  # absent when no example was written
        write_tfds_metadata(temp_dir, spec, info)
        # Last: its presence is what says the directory is complete.
        info_payload = (json.dumps(info, indent=2) + "\n").encode()
        if storage.is_local(out):
            storage.write_bytes(storage.join(temp_dir, INFO_FILE), info_payload)
            _publish_by_rename(pathlib.Path(storage.local_path(temp_dir)), pathlib.Path(storage.local_path(out)))
        else:
            _publish_in_place(temp_dir, out, info_payload)
    except BaseException as error:
        storage.delete_tree(temp_dir)
        if isinstance(error, DataError):
            # In one process Beam re-raises our own error with " [while running '<step>']" appended.
            message = re.sub(r"\s\[while running '[^']*'\]$", "", str(error))
            if message != str(error):
                raise DataError(message) from None
        elif isinstance(error, Exception):
            message = _data_error_message(error)
            if message:
                raise DataError(message) from None
        raise
    remove_dead_leftovers(out, log)  # a parked previous output kept at the start is stale now
    counts = ", ".join(f"{split} {info['splits'][split]['examples']}" for split in OUTPUT_SPLITS)
    log(f"[prepare] {name}: wrote {out} ({counts}) in {time.perf_counter() - started:.1f} s")
    return info


def rejection_summary(reports: list[dict]) -> list[dict]:
    """Rejection reports (one per block and reason) merged per file and reason, sorted by both.

    Counts add up; the first example key is the smallest. The order does not depend on
    how the source was cut into blocks or parts, so neither does the error message.
    """
    merged: dict[tuple[str, str], dict] = {}
    for report in reports:
        key = (report["origin"], report["reason"])
        if key in merged:
            merged[key]["count"] += report["count"]
            merged[key]["example_key"] = min(merged[key]["example_key"], report["example_key"])
        else:
            merged[key] = dict(report)
    return [merged[key] for key in sorted(merged)]


def dataset_info(spec: DatasetSpec, reports: list[dict], source_info: dict, config: PrepareConfig) -> dict:
    """Assemble INFO_FILE (``prepare_info.json``) from the pipeline's reports; fail on rejected examples."""
    rejected = rejection_summary([r for r in reports if r["kind"] == "rejected"])
    total_rejected = sum(r["count"] for r in rejected)
    if total_rejected > config.max_rejected:
        # One line, file first, like every other error: the reports give each file's problem.
        reasons = "; ".join(f"{r['origin']}: {r['count']} example(s) rejected, {r['reason']} "
                            f"(first: {r['example_key']})" for r in rejected)
        raise DataError(f"{rejected[0]['origin']}: {total_rejected} example(s) failed validation in {spec.name} "
                        f"(max_rejected is {config.max_rejected}): {reasons}")
    histogram = train_histogram(reports)
    if histogram is None or not histogram.sum(axis=1).all():
        raise DataError(f"{spec.name}: no training examples to compute statistics from ({source_info['kind']} source)")
    mean, std = channel_moments(histogram)
    splits = {}
    for split in OUTPUT_SPLITS:
        shards = sorted((r for r in reports if r["kind"] == "shard" and r["split"] == split),
                        key=lambda r: r["shard"])
        class_counts = [sum(column) for column in zip(*(s["class_counts"] for s in shards))]
        splits[split] = {
            "examples": sum(s["count"] for s in shards),
            "num_shards": len(shards),
            "shards": [{"file": s["file"], "examples": s["count"]} for s in shards],
            "class_counts": class_counts,
        }
    return {
        "name": spec.name,
        "schema_version": schema.SCHEMA_VERSION,
        "image_shape": list(spec.image_shape),
        "num_classes": spec.num_classes,
        "label_names": list(spec.label_names),
        "splits": splits,
        "train_statistics": {"mean": mean, "std": std, "units": "pixel values 0-255, per channel, train split"},
        "validation": {"fraction": config.validation_fraction, "seed": config.seed,
                       "carved_from": "train", "method": "splitmix64 hash of the example key"},
        "source": source_info,
        "shard_pattern": f"{spec.name}-{{split}}.tfrecord-{{shard:05d}}-of-{{num_shards:05d}}",
        "features": {"image": "bytes: raw uint8 pixels HxWxC", "key": "bytes", "label": "int64",
                     "shape": "int64[3]"},
    }


def tfds_split_infos(directory: str, info: dict) -> list:
    """One ``tfds.core.SplitInfo`` per split: the shards' example counts as the pipeline
    reported them (in shard order), and the shards' bytes as stored in ``directory``."""
    import tensorflow_datasets as tfds

    return [tfds.core.SplitInfo(
        name=split,
        shard_lengths=[shard["examples"] for shard in entry["shards"]],
        num_bytes=sum(storage.size(storage.join(directory, shard["file"])) for shard in entry["shards"]))
        for split, entry in info["splits"].items()]


def write_tfds_metadata(directory: str, spec: DatasetSpec, info: dict) -> None:
    """Write tensorflow-datasets' metadata beside the shards, so that
    ``tfds.builder_from_directory(directory)`` reads them.

    ``tfds.folder_dataset.write_metadata`` writes ``dataset_info.json``, ``features.json``
    and ``label.labels.txt``. Our shard names already follow its default template
    (``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}``). tfds is imported here, not at the
    top: it is slow to import and only the driver needs it (it does not load TensorFlow).
    tfds writes local files only here (it has no s3:// without TensorFlow's file systems), so
    for a remote ``directory`` the files are written locally and then copied there.
    """
    import tempfile

    import tensorflow_datasets as tfds

    directory = str(directory)
    if not storage.is_local(directory):
        shard_files = {shard["file"] for entry in info["splits"].values() for shard in entry["shards"]}
        with tempfile.TemporaryDirectory(prefix="tfds-metadata-") as staging:
            for name in shard_files:  # tfds finds the file-name template from the shards' names
                pathlib.Path(staging, name).touch()
            _write_tfds_metadata_files(tfds, staging, spec, info, tfds_split_infos(directory, info))
            for name in sorted(set(os.listdir(staging)) - shard_files):
                storage.write_bytes(storage.join(directory, name), pathlib.Path(staging, name).read_bytes())
        return
    _write_tfds_metadata_files(tfds, storage.local_path(directory), spec, info, tfds_split_infos(directory, info))


def _write_tfds_metadata_files(tfds, directory: str, spec: DatasetSpec, info: dict, split_infos: list) -> None:
    tfds.folder_dataset.write_metadata(
        data_dir=directory,
        features=schema.tfds_features(spec.image_shape, spec.label_names),
        split_infos=split_infos,
        # check_data would read an example back through TensorFlow (seconds of import in the
        # driver) and print to stdout; the tests read every example through tfds instead.
        check_data=False,
        description=(f"{spec.name} as written by `python -m pipeline.prepare` (TFRecord schema version "
                     f"{schema.SCHEMA_VERSION}: raw uint8 image bytes, label, key, shape). Per-channel "
                     f"statistics, the validation carve and the raw files' checksums are in {INFO_FILE}."),
        homepage=spec.homepage,
        supervised_keys=("image", "label"),
    )


def _host() -> str:
    """This machine's name as it goes into leftover directory names (letters, digits, '.', '_')."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname()) or "host"


def _temp_name(out_name: str) -> str:
    """``.<out>.tmp-<host>-<pid>``: a dead run's leftover names the run that made it."""
    return f".{out_name}.tmp-{_host()}-{os.getpid()}"


def _old_name(out_name: str) -> str:
    """``.<out>.old-<stamp>-<host>-<pid>``: where publishing parks the previous output for a moment."""
    stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    return f".{out_name}.old-{stamp}-{_host()}-{os.getpid()}"


def leftover_owner(entry: str, out_name: str) -> tuple[str, str | None, int] | None:
    """``(kind, host, pid)`` of a directory name a prepare run of ``out_name`` makes, else None.

    ``kind`` is ``tmp`` or ``old``. ``host`` is None for the names of runs before the host
    went into them (``.<out>.tmp-<pid>``), which were made on this machine.
    """
    match = re.fullmatch(rf"\.{re.escape(out_name)}\.(?:(tmp)|(old)-\d{{14}})-(?:([A-Za-z0-9._]+)-)?(\d+)", entry)
    if not match:
        return None
    return ("tmp" if match.group(1) else "old"), match.group(3), int(match.group(4))


def process_is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (``os.kill(pid, 0)``: no signal is sent).

    A process we may not signal is alive; pids that cannot name a process (0, negative,
    too large) count as alive, so nothing is ever removed on their account.
    """
    if pid <= 0:
        return True  # os.kill(0, ...) and negative pids address process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # PermissionError: it exists and is someone else's; the others: cannot tell
    return True


def remove_dead_leftovers(out: str | os.PathLike, log=print) -> list[str]:
    """Remove what killed prepare runs of ``out`` left beside it; return what was removed.

    Only directories named as :func:`leftover_owner` reads them, made on this machine
    (the host in the name; pids mean nothing across machines sharing a mount), by a
    process that no longer runs: a live run's temporary directory is never touched. A
    dead run's ``.old-`` directory is the previous output, parked while publishing:
    while ``out`` is missing it is the only copy, so it stays (and is logged). On an
    object store a "directory" is a key prefix; ``out`` may be any URL Beam knows.
    """
    out = str(out).rstrip("/")
    parent, out_name = storage.split(out)
    local = storage.is_local(out)
    removed = []
    for entry_name in storage.child_names(parent):
        owner = leftover_owner(entry_name, out_name)
        entry = storage.join(parent, entry_name)
        if owner is None or (local and (os.path.islink(storage.local_path(entry))
                                        or not os.path.isdir(storage.local_path(entry)))):
            continue
        kind, host, pid = owner
        if (host is not None and host != _host()) or process_is_alive(pid):
            continue
        if kind == "old" and not _exists(out):
            log(f"[prepare] kept {entry}: a killed run (pid {pid}) parked the previous output there, "
                f"and {out} is missing")
            continue
        try:
            storage.delete_tree(entry)  # another run may be removing it at the same time
        except OSError:
            pass
        if entry_name in storage.child_names(parent):
            log(f"[prepare] could not remove {entry}, left by a killed run (pid {pid})")
        else:
            log(f"[prepare] removed {entry}, left by a killed run (pid {pid})")
            removed.append(entry)
    return removed


def _exists(directory: str) -> bool:
    """Whether an output directory (on a store: any key under the prefix) is there."""
    if storage.is_local(directory):
        return os.path.exists(storage.local_path(directory))
    return bool(storage.list_files(directory))


def _make_temp_dir(out: str) -> str:
    """A fresh temporary directory beside the output (locally on the same file system, so the
    move is a rename), checked to be writable."""
    parent, out_name = storage.split(out)
    temp_dir = storage.join(parent, _temp_name(out_name))
    probe = storage.join(temp_dir, ".write-test")
    try:
        storage.delete_tree(temp_dir)
        if storage.is_local(out):
            os.makedirs(storage.local_path(temp_dir))
        storage.write_bytes(probe, b"")
        storage.delete_file(probe)
    except OSError as error:
        detail = f"{error.strerror}: {error.filename}" if error.strerror else f"{type(error).__name__}: {error}"
        raise DataError(f"{out}: output directory is not writable ({detail})") from None
    except Exception as error:  # object stores raise their own kinds (no bucket, no credentials)
        first_line = (str(error).splitlines() or [""])[0]
        raise DataError(f"{out}: output location is not writable ({type(error).__name__}: {first_line})") from None
    return temp_dir


def _publish_by_rename(temp_dir: pathlib.Path, out_path: pathlib.Path) -> None:
    """Move the finished directory into place; the old output is removed only after."""
    previous = out_path.parent / _old_name(out_path.name)
    if out_path.exists():
        os.replace(out_path, previous)
    os.replace(temp_dir, out_path)
    shutil.rmtree(previous, ignore_errors=True)


def _publish_in_place(temp_dir: str, out: str, info_payload: bytes) -> None:
    """Publish on a store that cannot rename a directory: the old output's INFO_FILE goes first
    (from then on it does not look complete), then its files, then the new files move in
    (copy and delete, file by file), and INFO_FILE is written last."""
    storage.delete_file(storage.join(out, INFO_FILE))
    storage.delete_tree(out)
    staged = storage.list_files(temp_dir)
    prefix = temp_dir.rstrip("/") + "/"
    storage.move_files(staged, [storage.join(out, path[len(prefix):]) for path in staged])
    storage.write_bytes(storage.join(out, INFO_FILE), info_payload)
    storage.delete_tree(temp_dir)


def _data_error_message(error: BaseException) -> str | None:
    """Our DataError's message when a runner wrapped it in its own exception, else None."""
    match = re.search(r"DataError: (.+?)(?:\s\[while running|\n\n|$)", str(error), re.S)
    return match.group(1).strip() if match else None
