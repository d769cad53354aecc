"""The Beam conversion: a DoFn per part of the source, composed of small pure functions,
then named PTransforms that join the shards and write the reports.

Elements are :class:`~components.data.sources.Block`s of a few thousand examples, not
single examples: Beam's per-element overhead would otherwise dominate (handing
60,000 single images through a DirectRunner costs minutes, blocks cost seconds).

    parts ─ ConvertParts ─┬─ pieces ─ AssembleShards ─────┬─ WriteReports
      (read, validate,    └─ reports (rejected examples, ─┘
       carve, write pieces,   each part's train histogram)
       histogram)

No image crosses a process boundary, and no image outlives its block. ``ConvertParts``
cuts the source into parts, one per worker, and :class:`ConvertPartFn` runs every step up
to writing on the worker that reads the part, one block at a time
(:func:`validate_block`, :func:`carve_validation`, :class:`PieceWriter`,
:func:`channel_histograms`): the part's records for each shard are appended to one *piece*
file under ``_pieces/``, and only the pieces' descriptions leave the DoFn, to be grouped by
shard for the step that joins each shard's pieces into the shard file (on a local disk the
first piece is renamed into place, so a source read in one part writes each record once).
Shipping the encoded records to the shard writers instead cost more than the second worker
gave back: 10 s against 2.5 s for the plain loop on CIFAR-10.

Why one DoFn for the block steps rather than one each: Beam's FnApiRunner fuses a chain of
DoFns, so blocks stream through it, but the DaskRunner does not fuse: it runs each DoFn
over a whole partition and keeps all its outputs in a list (``apply_dofn_to_bundle`` in
``apache_beam/runners/dask/transform_evaluator.py``, Beam 2.77), so blocks handed from one
DoFn to the next would hold a whole part's images in memory, growing with the data set.
Handing on only piece descriptions keeps memory at one block on every runner
(``python -m pipeline.bench prepare-scale`` measures it up to 40x CIFAR-10's size).

Everything the driver needs afterwards (per-shard counts and class counts, rejected
examples, the train pixel histograms) is written as small report files under
``_reports/`` in the output directory, so the driver never depends on a runner's
metrics API (DaskRunner has none).
Beam counters are kept as well, for the runners' own UIs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zlib
from typing import Iterable

import apache_beam as beam
import numpy as np

from components.data import schema, storage
from components.data.datasets import DatasetSpec
from components.data.sources import Block

REPORTS_DIR = "_reports"
PIECES_DIR = "_pieces"
NAMESPACE = "prepare"


def shard_file_name(dataset: str, split: str, shard: int, num_shards: int) -> str:
    """tfds-style shard name: ``<dataset>-<split>.tfrecord-00000-of-00008``."""
    return f"{dataset}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}"


def stable_hash(indices: np.ndarray, salt: str) -> np.ndarray:
    """splitmix64 of each index mixed with a salt: stable across runs, machines and Python versions.

    Python's ``hash`` is randomised per process, so it cannot decide splits or shards.
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = indices.astype(np.uint64) + np.uint64(zlib.crc32(salt.encode())) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to floats uniform in [0, 1) (top 53 bits, exact in float64)."""
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def validate_block(block: Block, spec: DatasetSpec) -> tuple[Block, list[dict]]:
    """The examples of ``block`` that match the data set's shape, dtype and label range, and
    one rejection report per reason (origin file, count, first example key), so the final
    error can name the file."""
    images, labels = block.images, block.labels
    if images.dtype != np.uint8 or tuple(images.shape[1:]) != spec.image_shape:
        # Shape and dtype are per block (one file has one layout): reject it whole.
        reason = (f"image dtype {images.dtype} and shape {tuple(images.shape[1:])}, expected uint8 "
                  f"{spec.image_shape}")
        return block.take(np.zeros(len(block), bool)), [_rejection(block, np.ones(len(block), bool), reason)]
    reports = []
    out_of_range = (labels < 0) | (labels >= spec.num_classes)
    if out_of_range.any():
        reason = (f"label out of range [0, {spec.num_classes}) "
                  f"(values {sorted(set(labels[out_of_range].tolist()))[:5]})")
        reports.append(_rejection(block, out_of_range, reason))
        block = block.take(~out_of_range)
    return block, reports


def _rejection(block: Block, mask: np.ndarray, reason: str) -> dict:
    return {"kind": "rejected", "origin": block.origin, "reason": reason, "count": int(mask.sum()),
            "example_key": block.take(mask).keys()[0]}


def carve_validation(block: Block, fraction: float, seed: int) -> list[Block]:
    """``block``, with a stable ``fraction`` of a train block sent to ``validation``.

    The choice depends only on the example's key and the seed, never on block layout,
    worker or run, so every run carves the same validation set.
    """
    if block.split != "train" or fraction == 0:
        return [block]
    to_validation = unit_interval(stable_hash(block.indices, f"validation:{seed}")) < fraction
    return [block.take(to_validation, "validation"), block.take(~to_validation)]


class PieceWriter:
    """Writes one part's records into one *piece* file per shard, in index order, as blocks come.

    The shard is a hash of the example's index (independent of the validation hash), so
    every shard is a uniform sample of its split: what interleaved reading at training time
    wants. A source yields each part's blocks in index order within a split, so appending
    keeps every piece sorted (checked: a block that goes back is an error, never a shuffled
    shard). Pieces are named after the part and the shard, so a retried part rewrites the
    same files. :meth:`close` returns ``((split, shard), piece)`` pairs, where the piece is a
    small dict: file name, first and last index, count, size in bytes and class counts.
    """

    def __init__(self, out_dir: str, part_number: int, num_shards: dict[str, int], num_classes: int, seed: int):
        self.out_dir, self.part_number = out_dir, part_number
        self.num_shards, self.num_classes, self.seed = num_shards, num_classes, seed
        self.handles: dict[tuple[str, int], object] = {}
        self.pieces: dict[tuple[str, int], dict] = {}

    def add(self, block: Block) -> None:
        if not len(block):
            return
        if (block.indices[1:] < block.indices[:-1]).any():  # sources yield blocks in index order; sort any other
            block = block.take(np.argsort(block.indices, kind="stable"))
        # Keys of one framed block share a length (schema.framed_block builds them column by
        # column), so a block that crosses a power of ten (index 999,999 to 1,000,000) is two runs.
        keys = block.key_array()
        key_lengths = np.char.str_len(keys)
        for run in np.split(np.arange(len(block)), np.flatnonzero(np.diff(key_lengths)) + 1):
            self._add_run(block.take(run), keys[run].astype(f"S{key_lengths[run[0]]}"))

    def _add_run(self, block: Block, keys: np.ndarray) -> None:
        framed = schema.framed_block(block.images, block.labels, keys)
        shards = stable_hash(block.indices, f"shard:{self.seed}{block.source_split}") % np.uint64(
            self.num_shards[block.split])
        for shard in np.unique(shards).tolist():
            picked = shards == shard
            indices = block.indices[picked]
            piece = self.pieces.get((block.split, shard))
            if piece is None:
                name = f"{block.split}-{shard:05d}-part{self.part_number:05d}"
                self.handles[block.split, shard] = storage.create(storage.join(self.out_dir, PIECES_DIR, name))
                piece = self.pieces[block.split, shard] = {
                    "file": name, "first_index": int(indices[0]), "last_index": -1, "count": 0, "bytes": 0,
                    "class_counts": np.zeros(self.num_classes, np.int64)}
            if indices[0] <= piece["last_index"]:
                raise ValueError(f"{piece['file']}: a block starting at {block.keys()[0]} ({block.origin}) comes "
                                 f"after index {piece['last_index']}; a source must yield a part's blocks in index order")
            records = framed[picked].ravel()
            self.handles[block.split, shard].write(records.data)
            piece["bytes"] += records.nbytes
            piece["last_index"] = int(indices[-1])
            piece["count"] += int(picked.sum())
            piece["class_counts"] += np.bincount(block.labels[picked], minlength=self.num_classes)

    def close(self) -> list[tuple[tuple[str, int], dict]]:
        for handle in self.handles.values():
            handle.close()
        return [(shard, {**piece, "class_counts": piece["class_counts"].tolist()})
                for shard, piece in sorted(self.pieces.items())]


class ConvertPartFn(beam.DoFn):
    """Read one part of the source on this worker and convert it block by block.

    For each block: validate, carve validation out of train, append the records to the
    part's pieces (:class:`PieceWriter`), add the train examples to the part's pixel
    histogram. Emits ``("piece", (split, shard), piece)`` for each of the part's pieces and
    ``("report", report)`` for every rejection and, at the end, for the part's train
    histogram (one output rather than tagged outputs, which DaskRunner does not keep
    apart). Only these small dicts leave the worker (module docstring).
    """

    def __init__(self, spec: DatasetSpec, out_dir: str, validation_fraction: float,
                 num_shards: dict[str, int], seed: int):
        self.spec = spec
        self.out_dir = out_dir
        self.validation_fraction = validation_fraction
        self.num_shards = num_shards
        self.seed = seed

    def process(self, numbered_part):
        part_number, source = numbered_part
        counter = beam.metrics.Metrics.counter
        histogram = np.zeros((self.spec.image_shape[2], 256), np.int64)
        pieces = PieceWriter(self.out_dir, part_number, self.num_shards, self.spec.num_classes, self.seed)
        try:
            for block in source.read_blocks():
                counter(NAMESPACE, "blocks_read").inc()
                valid, rejections = validate_block(block, self.spec)
                counter(NAMESPACE, "examples_valid").inc(len(valid))
                for report in rejections:
                    counter(NAMESPACE, "examples_rejected").inc(report["count"])
                    yield "report", report
                for carved in carve_validation(valid, self.validation_fraction, self.seed):
                    if carved.split == "train" and len(carved):
                        histogram += channel_histograms(carved.images)
                    pieces.add(carved)
        finally:
            written = pieces.close()  # on an error too: no open handle outlives the part
        for shard, piece in written:
            yield "piece", shard, piece
        # The part number keeps two parts' equal histograms apart (reports are named by content).
        yield "report", {"kind": "train_pixel_histogram", "part": part_number, "histogram": histogram.tolist()}


class AssembleShardFn(beam.DoFn):
    """Join a shard's pieces, in index order, into the shard file.

    Every piece covers an index range of one part and parts never share indices, so
    joining the pieces by first index gives the shard's records in index order: the same
    bytes whichever worker wrote which piece, however many parts, and on every rerun.
    (Index order, not the keys' text order: ``train/1000000`` sorts before ``train/999999``
    as text.) A retried join (a runner retrying the bundle) gives the same shard: on a local
    disk the first piece was renamed into the shard, so a retry finds the shard instead and
    cuts it back to the first piece's size before appending the others again.
    """

    def __init__(self, out_dir: str, dataset: str, num_shards: dict[str, int], num_classes: int):
        self.out_dir = out_dir
        self.dataset = dataset
        self.num_shards = num_shards
        self.num_classes = num_classes

    def process(self, element):
        (split, shard), pieces = element
        pieces = sorted((piece for piece in pieces if piece), key=lambda piece: piece["first_index"])  # no placeholder
        name = shard_file_name(self.dataset, split, shard, self.num_shards[split])
        for before, after in zip(pieces, pieces[1:]):
            if before["last_index"] >= after["first_index"]:
                raise ValueError(f"{name}: pieces {before['file']} and {after['file']} overlap in index range; "
                                 "a source must give each example one key")
        self._join(pieces, storage.join(self.out_dir, name))
        beam.metrics.Metrics.counter(NAMESPACE, "shards_written").inc()
        class_counts = np.sum([piece["class_counts"] for piece in pieces], axis=0, dtype=np.int64) if pieces \
            else np.zeros(self.num_classes, np.int64)
        yield {"kind": "shard", "split": split, "shard": shard, "file": name,
               "count": sum(piece["count"] for piece in pieces), "class_counts": class_counts.tolist()}

    def _join(self, pieces: list[dict], shard_path: str) -> None:
        """The pieces' bytes, in order, as the shard file. On a local disk the first piece
        becomes the shard by a rename and the others are appended, so a source read in one
        part writes each record once; elsewhere every piece is copied."""
        paths = [storage.join(self.out_dir, PIECES_DIR, piece["file"]) for piece in pieces]
        if paths and storage.is_local(shard_path):
            first, target = storage.local_path(paths[0]), storage.local_path(shard_path)
            if os.path.exists(first):
                os.replace(first, target)
            elif not (os.path.isfile(target) and os.path.getsize(target) >= pieces[0]["bytes"]):
                raise FileNotFoundError(f"{paths[0]}: piece missing, and {shard_path} does not hold its "
                                        f"{pieces[0]['bytes']} bytes either (a piece deleted by hand?)")
            shard_file = open(target, "r+b")
            shard_file.truncate(pieces[0]["bytes"])  # a retry: the shard is the first piece again
            shard_file.seek(0, os.SEEK_END)
            paths = paths[1:]
        else:
            shard_file = storage.create(shard_path)
        with shard_file:
            for path in paths:
                with storage.open_read(path) as piece_file:
                    shutil.copyfileobj(piece_file, shard_file, 8 << 20)


def channel_histograms(images: np.ndarray) -> np.ndarray:
    """Per-channel counts of each value 0-255 in uint8 images (..., C): exact, int64 (C, 256).

    ``np.bincount`` widens every input to 64 bits first, which dominates its cost, so the
    bytes are counted two at a time, as little-endian uint16s (65,536 bins), and each
    pair count is folded back onto the channels of its two bytes. Channels repeat every
    C bytes, so the channels of a pair repeat every lcm(2, C) bytes: one strided column
    of pairs each. About twice as fast as one bincount per channel on CIFAR-10 blocks.
    """
    channels = images.shape[-1]
    flat = np.ascontiguousarray(images).reshape(-1)
    period = math.lcm(2, channels)  # bytes
    whole = flat.size - flat.size % period
    pairs = flat[:whole].view("<u2").reshape(-1, period // 2)
    histogram = np.zeros((channels, 256), np.int64)
    for column in range(period // 2):
        counts = np.bincount(pairs[:, column], minlength=1 << 16).reshape(256, 256)  # [second byte, first byte]
        histogram[2 * column % channels] += counts.sum(axis=0)
        histogram[(2 * column + 1) % channels] += counts.sum(axis=1)
    for offset, value in enumerate(flat[whole:].tolist()):  # under `period` bytes left, from channel 0
        histogram[offset % channels, value] += 1
    return histogram


def channel_moments(histogram: Iterable[Iterable[int]]) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation, in pixel units 0-255."""
    counts = np.asarray(histogram, np.float64)
    values = np.arange(256, dtype=np.float64)
    totals = counts.sum(axis=1)
    if not totals.all():
        raise ValueError("no training pixels to compute statistics from")
    mean = (counts * values).sum(axis=1) / totals
    variance = (counts * (values - mean[:, None]) ** 2).sum(axis=1) / totals
    return mean.tolist(), np.sqrt(variance).tolist()


def train_histogram(reports: Iterable[dict]) -> np.ndarray | None:
    """The train split's per-channel pixel histogram: the sum of the parts' histograms (exact
    integers, so the order the parts come in does not matter); None if no part reported one."""
    histograms = [np.asarray(report["histogram"], np.int64) for report in reports
                  if report["kind"] == "train_pixel_histogram"]
    return np.sum(histograms, axis=0, dtype=np.int64) if histograms else None


@beam.ptransform_fn
def ConvertParts(pipeline, source, spec: DatasetSpec, out_dir: str, validation_fraction: float,
                 num_shards: dict[str, int], seed: int, parts: int):
    """Cut the source into up to ``parts`` parts and convert each on a worker of its own.

    Returns ``(pieces, reports)``: ``((split, shard), piece)`` pairs, and report dicts.
    ``beam.Create`` spreads the parts over the workers.
    """
    converted = (pipeline
                 | "CreateParts" >> beam.Create(list(enumerate(source.parts(parts))))
                 | "Convert" >> beam.ParDo(ConvertPartFn(spec, out_dir, validation_fraction, num_shards, seed)))
    pieces = converted | "Pieces" >> beam.FlatMap(lambda output: [output[1:]] if output[0] == "piece" else [])
    reports = converted | "Reports" >> beam.FlatMap(lambda output: [output[1]] if output[0] == "report" else [])
    return pieces, reports


@beam.ptransform_fn
def AssembleShards(pieces, out_dir: str, spec: DatasetSpec, num_shards: dict[str, int]):
    """Group the pieces by shard and join them; an empty shard is still written."""
    every_shard = [((split, shard), None) for split, count in sorted(num_shards.items()) for shard in range(count)]
    # Not reshuffled: the placeholders are tiny, and a Reshuffle is two more Beam stages.
    placeholders = pieces.pipeline | "EveryShard" >> beam.Create(every_shard, reshuffle=False)
    return ((pieces, placeholders)
            | "WithEveryShard" >> beam.Flatten()
            | "GroupPiecesByShard" >> beam.GroupByKey()
            | "AssembleShard" >> beam.ParDo(AssembleShardFn(out_dir, spec.name, num_shards, spec.num_classes)))


class WriteReportFn(beam.DoFn):
    """Write each report dict as its own small JSON file under ``<out_dir>/_reports/``.

    The file name is a hash of the content, so a retried bundle rewrites the same file.
    One file per report needs no global combine step before the driver can read them.
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, report: dict):
        payload = json.dumps(report, sort_keys=True).encode()
        name = f"{report['kind']}-{hashlib.sha1(payload).hexdigest()[:16]}.json"
        with storage.create(storage.join(self.out_dir, REPORTS_DIR, name)) as handle:
            handle.write(payload)


def read_reports(out_dir: str) -> list[dict]:
    """The reports the pipeline wrote under ``out_dir`` (a local path or any URL Beam knows)."""
    return [json.loads(storage.read_bytes(path)) for path in storage.list_files(storage.join(out_dir, REPORTS_DIR))
            if path.endswith(".json")]


def build_conversion(pipeline, source, spec: DatasetSpec, out_dir: str, validation_fraction: float,
                     num_shards: dict[str, int], seed: int, read_parts: int = 1) -> None:
    """Add the whole conversion of ``source`` into ``out_dir`` to ``pipeline``.

    ``read_parts``: how many parts to read the source in, at most (one per worker).
    The output does not depend on it.
    """
    pieces, reports = pipeline | "ConvertParts" >> ConvertParts(source, spec, out_dir, validation_fraction,
                                                                num_shards, seed, read_parts)
    shards = pieces | "AssembleShards" >> AssembleShards(out_dir, spec, num_shards)
    # One sink fed by every branch: DaskRunner computes only the last step's graph.
    ((shards, reports)
     | "AllReports" >> beam.Flatten()
     | "WriteReports" >> beam.ParDo(WriteReportFn(out_dir)))
