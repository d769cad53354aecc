"""Files by local path or by URL: every file system Beam's ``FileSystems`` knows.

The prepare stage reads its archives and writes its output only through these functions,
so one code path serves a local disk, ``gs://``, ``s3://`` and ``hdfs://`` alike. Bytes are
always moved as they are (``CompressionTypes.UNCOMPRESSED``): Beam would otherwise
inflate a ``.gz`` on the fly, and our readers check the archives' own gzip streams.

Object stores have no directories and no rename: a "directory" here is a key prefix, and
:func:`is_local` tells the caller when a rename is there to publish with.
Credentials and endpoints come from Beam's pipeline options (``--s3_endpoint_url``,
``--s3_access_key_id``, ...): :func:`use_options` hands them to ``FileSystems`` for the
driver, as the runner does for its workers.

One workaround for a Beam bug lives here, with Beam's file systems, written down the way
``components/compat.py`` writes down its own (it keeps the Keras and TensorFlow ones):

1. **Beam's S3 writer cannot write an empty object.** ``S3Uploader.finish``
   (apache_beam/io/aws/s3io.py, checked in Beam 2.77) completes a multipart upload with no
   parts when nothing was written, which S3 refuses with ``MalformedXML``: an empty shard (a
   split with fewer examples than shards) or an empty file could not be published to
   ``s3://``. Upstream: https://github.com/apache/beam/issues/21369 (open). Fix: a writer
   to ``s3://`` opens Beam's only at the first byte; closed with none written, it puts
   the empty object with Beam's own boto3 client. ``tests/test_remote_storage.py`` fails once
   Beam writes empty objects itself, and :data:`BEAM_CHECKED` refuses other Beam versions.
"""
from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_RAW = CompressionTypes.UNCOMPRESSED
# Beam versions workaround 1 was checked against; outside them create() on s3:// raises, so an
# upgrade is a decision (rerun tests/test_remote_storage.py), not a surprise.
BEAM_CHECKED = ((2, 77), (2, 77))
BEAM_S3_EMPTY_OBJECT_ISSUE = "https://github.com/apache/beam/issues/21369"


def beam_version() -> tuple[int, int]:
    """(major, minor) of the installed Apache Beam."""
    import apache_beam

    major, minor = apache_beam.__version__.split(".")[:2]
    return int(major), int(minor)


def use_options(options) -> None:
    """Let the driver's ``FileSystems`` calls use ``options`` (endpoints, credentials)."""
    FileSystems.set_options(options)


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine's file system (no scheme, or ``file://``)."""
    return FileSystems.get_scheme(str(path)) in (None, "file")


def local_path(path: str) -> str:
    """``path`` without a ``file://`` prefix (local paths only)."""
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with the separator of ``base``'s file system."""
    return FileSystems.join(str(base), *parts)


def split(path: str) -> tuple[str, str]:
    """``(parent, name)`` of ``path``."""
    return FileSystems.split(str(path).rstrip("/"))


def is_file(path: str) -> bool:
    """Whether a file (an object, on a store) exists at exactly ``path``."""
    if is_local(path):
        return os.path.isfile(local_path(path))
    return FileSystems.exists(str(path))


def open_read(path: str):
    """A binary file object reading ``path``'s bytes as stored; FileNotFoundError if absent."""
    if is_local(path):
        return open(local_path(path), "rb")  # the plain open: no layer between tarfile and the disk
    return FileSystems.open(str(path), compression_type=_RAW)


def create(path: str):
    """A binary file object writing ``path`` (parents made as needed; replaced if present)."""
    if FileSystems.get_scheme(str(path)) == "s3":
        return _S3Writer(str(path))
    return FileSystems.create(str(path), compression_type=_RAW)


class _S3Writer:
    """Beam's writer to ``s3://``, opened at the first byte; an empty object is put directly
    (workaround 1 of this module's docstring)."""

    def __init__(self, path: str):
        low, high = BEAM_CHECKED
        if not low <= beam_version() <= high:
            raise RuntimeError(
                f"apache-beam {'.'.join(map(str, beam_version()))} is outside the versions {__name__}'s S3 "
                f"workaround was checked against ({low[0]}.{low[1]} to {high[0]}.{high[1]}); run "
                f"tests/test_remote_storage.py, then widen BEAM_CHECKED or drop it ({BEAM_S3_EMPTY_OBJECT_ISSUE})")
        self.path = path
        self._writer = None

    def write(self, data) -> int:
        if self._writer is None:
            if not len(data):
                return 0
            self._writer = FileSystems.create(self.path, compression_type=_RAW)
        return self._writer.write(data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            return
        from apache_beam.io.aws import s3io

        bucket, key = s3io.parse_s3_path(self.path)
        filesystem = FileSystems.get_filesystem(self.path)
        s3io.S3IO(options=filesystem._options).client.client.put_object(Bucket=bucket, Key=key, Body=b"")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()  # as Beam's own writer does on an error: what was written is kept


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def write_bytes(path: str, payload: bytes) -> None:
    with create(path) as handle:
        handle.write(payload)


def size(path: str) -> int:
    """``path``'s size in bytes."""
    if is_local(path):
        return os.path.getsize(local_path(path))
    (result,) = FileSystems.match([str(path)], limits=[1])
    if not result.metadata_list:
        raise FileNotFoundError(f"{path}: not found")
    return result.metadata_list[0].size_in_bytes


def list_files(directory: str) -> list[str]:
    """Every file under ``directory`` at any depth, as full paths, sorted; [] when it is absent."""
    directory = str(directory).rstrip("/")
    if is_local(directory):
        root = local_path(directory)
        return sorted(os.path.join(parent, name) for parent, _, names in os.walk(root) for name in names)
    (result,) = FileSystems.match([join(directory, "**")])
    return sorted(metadata.path for metadata in result.metadata_list)


def child_names(directory: str) -> list[str]:
    """The names of the entries directly in ``directory`` (on a store: the first component of
    each key under it), sorted; [] when it is absent."""
    directory = str(directory).rstrip("/")
    if is_local(directory):
        try:
            return sorted(os.listdir(local_path(directory)))
        except OSError:
            return []
    prefix = directory + "/"
    return sorted({path[len(prefix):].split("/", 1)[0] for path in list_files(directory)})


def delete_tree(directory: str) -> None:
    """Remove ``directory`` and everything under it; nothing happens when it is absent."""
    if is_local(directory):
        shutil.rmtree(local_path(directory), ignore_errors=True)
        return
    files = list_files(directory)
    if files:
        FileSystems.delete(files)


def delete_file(path: str) -> None:
    """Remove the file at ``path`` if there is one."""
    if is_file(path):
        FileSystems.delete([str(path)])


def move_files(sources: list[str], destinations: list[str]) -> None:
    """Move each file to its destination (on an object store: a copy, then a delete)."""
    if sources:
        FileSystems.rename(list(sources), list(destinations))
