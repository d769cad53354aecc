"""Readers for the publishers' own archive formats, with no pickle and no extraction to disk.

* IDX (MNIST, Fashion-MNIST): gzip-compressed big-endian files, magic ``0x0803`` for
  uint8 images (count, rows, cols) and ``0x0801`` for uint8 labels (count).
* CIFAR binary (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``): fixed-size
  records of label byte(s) followed by 3072 pixel bytes, channel-major (R, G, B planes).
  Tar members are streamed from the archive (``r|``), so no member name can escape
  to the file system; every member is still checked for its type and name (see
  :func:`iter_tar_members`), so an archive can hold nothing a reader would have to guess about.
  The gzip layer is inflated in a thread of its own (:class:`InflatingReader`), so the
  conversion's other work runs on a second core meanwhile.

Files are opened through :mod:`components.data.storage`, so ``path`` may be a local path or
any URL Beam's ``FileSystems`` knows. Every failure raises :class:`DataError` naming the
file and what is wrong with it.
"""
from __future__ import annotations

import gzip
import pathlib
import queue
import struct
import tarfile
import threading
import zlib
from typing import BinaryIO, Collection, Container, Iterator

import numpy as np

from components.data import storage
from components.data.errors import DataError

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dimension
CIFAR_PIXELS = 32 * 32 * 3


def read_gzip(path: str | pathlib.Path) -> bytes:
    """Return the decompressed bytes of a gzip file, or raise DataError naming it."""
    try:
        with storage.open_read(str(path)) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises BadGzipFile (an OSError) for a wrong header and EOFError for a
        # truncated stream.
        raise DataError(f"{path}: not a valid gzip file ({type(error).__name__}: {error})") from None


def parse_idx_images(payload: bytes, source: str) -> np.ndarray:
    """Parse an IDX3 image file's bytes into a uint8 array of shape (count, rows, cols, 1)."""
    if len(payload) < 16:
        raise DataError(f"{source}: {len(payload)} bytes is too short for an IDX image header (16 bytes)")
    magic, count, rows, cols = struct.unpack(">IIII", payload[:16])
    if magic != IDX_IMAGES_MAGIC:
        raise DataError(f"{source}: IDX magic {magic:#010x}, expected {IDX_IMAGES_MAGIC:#010x} (uint8 images)")
    expected = 16 + count * rows * cols
    if len(payload) != expected:
        raise DataError(f"{source}: header says {count} images of {rows}x{cols} ({expected} bytes), "
                        f"file has {len(payload)} bytes")
    return np.frombuffer(payload, np.uint8, offset=16).reshape(count, rows, cols, 1)


def parse_idx_labels(payload: bytes, source: str) -> np.ndarray:
    """Parse an IDX1 label file's bytes into an int64 array of shape (count,)."""
    if len(payload) < 8:
        raise DataError(f"{source}: {len(payload)} bytes is too short for an IDX label header (8 bytes)")
    magic, count = struct.unpack(">II", payload[:8])
    if magic != IDX_LABELS_MAGIC:
        raise DataError(f"{source}: IDX magic {magic:#010x}, expected {IDX_LABELS_MAGIC:#010x} (uint8 labels)")
    if len(payload) != 8 + count:
        raise DataError(f"{source}: header says {count} labels ({8 + count} bytes), file has {len(payload)} bytes")
    return np.frombuffer(payload, np.uint8, offset=8).astype(np.int64)


def read_idx_split(images_path: str | pathlib.Path, labels_path: str | pathlib.Path
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Read one split from a pair of gzip IDX files; checks the counts agree."""
    images = parse_idx_images(read_gzip(images_path), str(images_path))
    labels = parse_idx_labels(read_gzip(labels_path), str(labels_path))
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels")
    return images, labels


class InflatingReader:
    """A read-only stream of a gzip file's inflated bytes, inflated ahead in a background thread.

    Inflating is most of what reading a CIFAR archive costs (0.8-0.9 s of the 1.5 s the
    whole CIFAR-10 conversion takes in one process, measured here), and zlib lets go of
    the GIL while it inflates, so a thread doing only that runs on a second core while
    the reading thread parses, validates and writes. At most ``depth`` chunks of up to
    ``chunk_bytes`` wait between the two (8 MiB by default), so memory does not grow with
    the file. Python's own :class:`gzip.GzipFile` does the inflating: it checks the
    header, each member's CRC-32 and length at its end, and raises what it raises
    (``BadGzipFile``, ``EOFError``, ``zlib.error``) from :meth:`read`, in the reading thread.

    Use it as a context manager: leaving it (or :meth:`close`) stops and joins the
    thread, which may be inflating ahead, before ``raw`` is closed by its owner.
    """

    def __init__(self, raw: BinaryIO, chunk_bytes: int = 1 << 20, depth: int = 8):
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._at_end = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._inflate, args=(raw, chunk_bytes), daemon=True,
                                        name="gzip-inflate")
        self._thread.start()

    def _inflate(self, raw: BinaryIO, chunk_bytes: int) -> None:
        # read1 inflates one read of the file at a time (128 KiB), so the bytes before a cut or
        # damage are in hand when the error comes, and reach the reader before it does (read
        # would drop them); they are handed over gathered into chunks, since a hand-over per
        # read1 took a third longer here.
        pieces, gathered = [], 0
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                while not self._stop.is_set():
                    piece = stream.read1(chunk_bytes)
                    if not piece:  # the end, after the CRC-32 and length are checked
                        if gathered:
                            self._hand_over(b"".join(pieces))
                        self._hand_over(b"")
                        return
                    pieces.append(piece)
                    gathered += len(piece)
                    if gathered >= chunk_bytes:
                        self._hand_over(b"".join(pieces))
                        pieces, gathered = [], 0
        except BaseException as error:  # handed to the reading thread, which raises it
            if gathered:
                self._hand_over(b"".join(pieces))
            self._hand_over(error)

    def _hand_over(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():  # a reader that stopped early must not leave us blocked
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` inflated bytes (all that are left when negative); b"" at the end. Raises
        what inflating raised once the bytes before it are read, and again on every later call."""
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if not self._pending and not self._at_end:
            item = self._error or self._chunks.get()  # the thread has ended after an error
            if isinstance(item, BaseException):
                self._error = item
                raise item
            self._pending = memoryview(item)
            self._at_end = not item
        piece = self._pending[:size].tobytes()
        self._pending = self._pending[len(piece):]
        return piece

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Stop the inflating thread and wait for it; idempotent."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room, so a thread blocked handing over a chunk sees the stop at once
                self._chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> "InflatingReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _unsafe_name(name: str) -> str | None:
    """Why a tar member name could point outside the archive's own tree, or None if it cannot."""
    if not name:
        return "has an empty name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):  # POSIX root or a Windows drive
        return "has an absolute name"
    if ".." in pathlib.PurePosixPath(name).parts:
        return "has a '..' component"
    return None


def _not_a_regular_file(member: tarfile.TarInfo) -> str:
    """What a member that is neither a regular file nor a directory is, in words."""
    if member.issym():
        return f"is a symbolic link (to '{member.linkname}')"
    if member.islnk():
        return f"is a hard link (to '{member.linkname}')"
    if member.ischr():
        return "is a character device"
    if member.isblk():
        return "is a block device"
    if member.isfifo():
        return "is a FIFO"
    return f"has tar type {member.type!r}"


# How much tarfile asks of the inflated stream at a time (its own default, 10 KiB, means a
# hundred calls for each MiB inflated).
_TAR_READ_BYTES = 1 << 16

# What the tar and gzip layers raise for an archive that is cut short or damaged.
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _corrupt_archive(path, error: BaseException) -> DataError:
    return DataError(f"{path}: truncated or corrupt tar.gz archive ({type(error).__name__}: {error})")


def iter_tar_members(path: str | pathlib.Path, wanted: Container[str] | None = None,
                     allowed: Collection[str] | None = None) -> Iterator[tuple[str, int, BinaryIO | None]]:
    """Yield ``(member name, size in bytes, handle)`` for each regular file of a ``.tar.gz``, streaming.

    ``handle`` reads the member's bytes and is valid until the next member is asked for
    (read it with :func:`read_member`, which names the archive on failure); members not in
    ``wanted`` (when given) come with ``None``: their data is skipped, though still inflated,
    since a gzip stream has no index to seek by. Stop iterating early to stop reading the archive.

    Every member passed is checked before anything is yielded for it, so a reader that
    stops early has checked every member before the place it stopped. DataError, naming
    the archive and the member, for: an absolute name or a ``..`` component; a name seen
    before (of any type: two readings of one name would leave one of them silently
    used); a member that is neither a regular file nor a directory (links, devices,
    FIFOs); a regular file not in ``allowed`` (when given). Directories are skipped.
    """
    seen: dict[str, int] = {}  # member name -> its position in the archive, from 1
    try:
        with (storage.open_read(str(path)) as raw, InflatingReader(raw) as inflated,
              tarfile.open(fileobj=inflated, mode="r|", bufsize=_TAR_READ_BYTES) as archive):
            for position, member in enumerate(archive, start=1):
                name = member.name
                problem = _unsafe_name(name)
                if problem is None and name in seen:
                    problem = f"appears twice (members {seen[name]} and {position}); each name must appear once"
                if problem is None and not (member.isfile() or member.isdir()):
                    problem = f"{_not_a_regular_file(member)}; only regular files and directories are allowed"
                if problem is None and member.isfile() and allowed is not None and name not in allowed:
                    problem = (f"({member.size} bytes) is not a file of this release; "
                               f"expected only {', '.join(sorted(allowed))}")
                if problem is not None:
                    raise DataError(f"{path}: member '{name}' {problem}")
                seen[name] = position
                if member.isfile():
                    keep = wanted is None or name in wanted
                    yield name, member.size, archive.extractfile(member) if keep else None
            # Read to the end of the gzip stream, past the tar's end-of-archive blocks, so that
            # gzip checks its CRC-32 and length: a reader that went this far has read the whole file.
            inflated.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except _ARCHIVE_ERRORS as error:
        raise _corrupt_archive(path, error) from None


def read_member(handle: BinaryIO, size: int, archive: str | pathlib.Path) -> bytes:
    """Up to ``size`` bytes of a member handle from :func:`iter_tar_members`; DataError naming
    ``archive`` when the stream ends early or is damaged."""
    try:
        payload = handle.read(size)
    except _ARCHIVE_ERRORS as error:
        raise _corrupt_archive(archive, error) from None
    if len(payload) != size:
        raise _corrupt_archive(archive, EOFError(f"member ends after {len(payload)} of {size} bytes"))
    return payload


def iter_cifar_record_chunks(handle: BinaryIO, size: int, label_bytes: int, chunk_records: int,
                             archive: str | pathlib.Path, source: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Parse a CIFAR member of ``size`` bytes ``chunk_records`` records at a time, streaming.

    Yields what :func:`parse_cifar_records` returns, for consecutive runs of records, so
    memory stays at one chunk however large the member. ``source`` names the member in
    errors, ``archive`` the file a damaged stream is blamed on.
    """
    record_size = label_bytes + CIFAR_PIXELS
    if size == 0 or size % record_size:
        raise DataError(f"{source}: {size} bytes is not a whole number of {record_size}-byte CIFAR records")
    for start in range(0, size, chunk_records * record_size):
        length = min(chunk_records * record_size, size - start)
        yield parse_cifar_records(read_member(handle, length, archive), label_bytes, source)


def parse_cifar_records(payload: bytes, label_bytes: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse CIFAR binary records into (images uint8 (N, 32, 32, 3), labels int64 (N, label_bytes)).

    Each record is ``label_bytes`` label bytes then 1024 R, 1024 G and 1024 B bytes, row-major.
    """
    record_size = label_bytes + CIFAR_PIXELS
    if len(payload) == 0 or len(payload) % record_size:
        raise DataError(f"{source}: {len(payload)} bytes is not a whole number of "
                        f"{record_size}-byte CIFAR records")
    records = np.frombuffer(payload, np.uint8).reshape(-1, record_size)
    labels = records[:, :label_bytes].astype(np.int64)
    planes = records[:, label_bytes:].reshape(-1, 3, 32, 32)
    images = np.empty((len(records), 32, 32, 3), np.uint8)
    for channel in range(3):  # one plane at a time: 3x faster than one 4-D transposing copy
        images[..., channel] = planes[:, channel]
    return images, labels
