"""Keras callbacks of the trainer: progress lines, history, and resumable checkpoints;
and the file-system steps that make its outputs all-or-nothing."""
from __future__ import annotations

import csv
import ctypes
import dataclasses
import errno
import io
import json
import os
import pathlib
import re
import shutil
import signal
import sys
import time

import keras
import numpy as np

from components.compat import outside_distribution

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                  "epoch_time_s", "images_per_s")


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer used for its last step: a schedule evaluated at that step
    (``optimizer.learning_rate`` evaluates it at the next one), or the plain rate."""
    schedule = optimizer._learning_rate  # Keras keeps the schedule object here (3.x)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(schedule(max(int(optimizer.iterations.numpy()) - 1, 0))))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# Tests only: "<point>" or "<point>:<epoch>" makes the process SIGKILL itself at that point
# (see kill_point), to prove what a kill there leaves behind.
KILL_AT_ENV = "CNN_ZOO_TEST_KILL_AT"


def kill_point(point: str, epoch: int | None = None) -> None:
    """SIGKILL this process here if ``$CNN_ZOO_TEST_KILL_AT`` names ``point`` (or ``point:epoch``).

    Points: ``checkpoint-written`` (an epoch's files written, not yet committed),
    ``checkpoint-committed`` (committed, older ones not yet pruned), ``model-staged``
    (the model directory complete aside, not yet renamed into place).
    """
    wanted = os.environ.get(KILL_AT_ENV)
    if wanted and wanted in (point, f"{point}:{epoch}"):
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write via a temporary file, fsync and a rename, so a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def fsync_directory(path: pathlib.Path) -> None:
    """Flush a directory's entries (the names created or renamed in it) to disk."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(path: pathlib.Path) -> None:
    """fsync every file under ``path``, then the directories, deepest first."""
    for directory, _, files in sorted(os.walk(path), key=lambda entry: -entry[0].count(os.sep)):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(pathlib.Path(directory))


def replace_directory(staged: pathlib.Path, target: pathlib.Path) -> None:
    """Put the complete directory ``staged`` at ``target``, replacing any previous one, in one step.

    With a previous ``target``, Linux's ``renameat2(RENAME_EXCHANGE)`` swaps the two names
    atomically, so ``target`` is at every instant either the old or the new directory.
    Where that is unavailable (other systems, some file systems) the old one is moved
    aside first, which leaves a moment with no ``target``. ``staged`` is gone afterwards.
    """
    fsync_tree(staged)
    if not target.exists():
        os.replace(staged, target)
    elif _exchange(staged, target):
        shutil.rmtree(staged)  # it now holds the previous directory
    else:
        previous = target.with_name(f".{target.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
        os.replace(staged, target)
        shutil.rmtree(previous, ignore_errors=True)
    fsync_directory(target.parent)


def _exchange(first: pathlib.Path, second: pathlib.Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(code, f"renameat2(RENAME_EXCHANGE) of {first} and {second}: {os.strerror(code)}")


class EpochTimer(keras.callbacks.Callback):
    """Adds ``learning_rate``, ``epoch_time_s`` and ``images_per_s`` to each epoch's logs.

    Timing covers the training pass only (not validation), so images/s is the rate at
    which the model consumed training images.
    """

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._train_time = time.perf_counter() - self._started

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        train_time = getattr(self, "_train_time", time.perf_counter() - self._started)
        logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        logs["epoch_time_s"] = time.perf_counter() - self._started
        logs["images_per_s"] = self.images_per_epoch / max(train_time, 1e-9)


class ProgressLine(keras.callbacks.Callback):
    """One line per epoch a person can follow in a terminal or a CI log:

    ``epoch  3/30  loss 0.512  acc 0.823  val_loss 0.490  val_acc 0.831  lr 0.0100  2,345 img/s  21.3 s  ETA 8m12s``
    """

    def __init__(self, epochs: int, stream=sys.stdout, prefix: str = "[train]"):
        super().__init__()
        self.epochs = epochs
        self.stream = stream
        self.prefix = prefix
        self._times: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._times.append(logs.get("epoch_time_s", 0.0))
        remaining = (self.epochs - epoch - 1) * float(np.mean(self._times[-3:]))
        fields = [f"{self.prefix} epoch {epoch + 1:>{len(str(self.epochs))}}/{self.epochs}"]
        for key, label, fmt in (("loss", "loss", ".4f"), ("accuracy", "acc", ".4f"), ("val_loss", "val_loss", ".4f"),
                                ("val_accuracy", "val_acc", ".4f"), ("learning_rate", "lr", ".3g")):
            if key in logs:
                fields.append(f"{label} {logs[key]:{fmt}}")
        fields.append(f"{logs.get('images_per_s', 0):,.0f} img/s")
        fields.append(f"{logs.get('epoch_time_s', 0):.1f} s")
        fields.append(f"ETA {format_duration(remaining)}")
        print("  ".join(fields), file=self.stream, flush=True)


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


WEIGHTS_FILE = "model.weights.h5"  # in each epoch directory: model and optimizer variables (Keras wants .weights.h5)
STATE_FILE = "state.json"  # in each epoch directory: completed epochs, history, best, fingerprint
_EPOCH_DIR = re.compile(r"epoch-(\d{4,})")


def epoch_directory(directory: pathlib.Path, epoch: int) -> pathlib.Path:
    """Where the checkpoint after ``epoch`` (1-based) lives: ``<directory>/epoch-NNNN``."""
    return directory / f"epoch-{epoch:04d}"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One committed checkpoint: ``path`` (an epoch directory) and its state."""

    path: pathlib.Path
    state: dict

    @property
    def weights(self) -> pathlib.Path:
        return self.path / self.state["weights"]

    @property
    def best_weights(self) -> pathlib.Path | None:
        """The weights of the best epoch so far (kept in that epoch's own directory), if any."""
        best = self.state.get("best_epoch")
        return epoch_directory(self.path.parent, best) / WEIGHTS_FILE if best else None


class CheckpointError(RuntimeError):
    """A checkpoint directory that does not describe itself consistently."""


def latest_checkpoint(directory: pathlib.Path) -> Checkpoint | None:
    """The newest committed checkpoint in ``directory``, checked, or None.

    An epoch directory gets its name only once its weights and state are on disk (see
    :class:`Checkpointer`), so the highest ``epoch-NNNN`` is the last completed epoch;
    ``epoch-NNNN.tmp`` leftovers of a kill are ignored.
    """
    epochs = sorted(int(m.group(1)) for p in (directory.iterdir() if directory.is_dir() else ())
                    if (m := _EPOCH_DIR.fullmatch(p.name)) and p.is_dir())
    if not epochs:
        return None
    path = epoch_directory(directory, epochs[-1])
    try:
        state = json.loads((path / STATE_FILE).read_text())
        completed, weights = state["completed_epochs"], state["weights"]
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint state ({type(error).__name__}: {error})") from None
    checkpoint = Checkpoint(path, state)
    if completed != epochs[-1]:
        raise CheckpointError(f"{path / STATE_FILE}: says completed_epochs={completed}, but it is the "
                              f"checkpoint of epoch {epochs[-1]}")
    for needed in (checkpoint.weights, checkpoint.best_weights):
        if needed is not None and not needed.is_file():
            raise CheckpointError(f"{path / STATE_FILE}: names {needed}, which is missing")
    return checkpoint


class Checkpointer(keras.callbacks.Callback):
    """After each epoch, saves everything needed to resume, as one unit, and keeps the best epoch's.

    Epoch N is written to ``epoch-NNNN.tmp/`` (``model.weights.h5``: model and optimizer
    variables, so the step count, the schedule, momentum and the weight average continue;
    ``state.json``: completed epochs, history, best score and epoch, fingerprint),
    fsynced, then renamed to ``epoch-NNNN``: that rename is the commit. Older epochs are
    deleted afterwards, except the best one (its weights are the best weights). After a
    ``kill -9`` anywhere, the highest ``epoch-NNNN`` holds the weights and the state of
    the same completed epoch.

    ``write=False`` (the other workers of a multi-worker run): keeps the history and the
    best epoch, writes nothing; :attr:`best_weights` then names the chief's file, in the
    directory every worker shares.
    """

    def __init__(self, directory: pathlib.Path, fingerprint: dict, history: list[dict], best: float,
                 best_epoch: int | None = None, extra_state: dict | None = None, monitor: str = "val_accuracy",
                 write: bool = True):
        super().__init__()
        self.directory = directory
        self.write = write
        self.fingerprint = fingerprint
        self.history = history
        self.best = best
        self.best_epoch = best_epoch
        self.extra_state = dict(extra_state or {})
        self.monitor = monitor

    @property
    def best_weights(self) -> pathlib.Path | None:
        """The best epoch's weights file so far, or None before the first epoch with a score."""
        return epoch_directory(self.directory, self.best_epoch) / WEIGHTS_FILE if self.best_epoch else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        completed = epoch + 1
        row = {"epoch": completed, **{k: float(logs[k]) for k in HISTORY_FIELDS[1:] if k in logs}}
        self.history[:] = [r for r in self.history if r["epoch"] < completed] + [row]
        score = logs.get(self.monitor)
        if score is not None and score > self.best:
            self.best, self.best_epoch = float(score), completed
        if not self.write:
            return
        state = {"completed_epochs": completed, "weights": WEIGHTS_FILE, "best": self.best,
                 "best_epoch": self.best_epoch, "monitor": self.monitor, "fingerprint": self.fingerprint,
                 "history": self.history, **self.extra_state}
        final = epoch_directory(self.directory, completed)
        staged = final.with_name(f"{final.name}.tmp")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        with outside_distribution():  # the chief saves alone (components/compat.py, workaround 3)
            self.model.save_weights(str(staged / WEIGHTS_FILE))
        (staged / STATE_FILE).write_text(json.dumps(state, indent=1))
        fsync_tree(staged)
        kill_point("checkpoint-written", completed)
        shutil.rmtree(final, ignore_errors=True)  # an older try at this epoch: never after a clean resume
        os.replace(staged, final)
        fsync_directory(self.directory)
        kill_point("checkpoint-committed", completed)
        keep = {final.name, epoch_directory(self.directory, self.best_epoch).name if self.best_epoch else None}
        for path in self.directory.iterdir():
            if path.name.startswith("epoch-") and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def write_history_csv(history: list[dict], path: pathlib.Path) -> None:
    """The per-epoch history as CSV (DVC plots read it directly)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    write_atomically(path, buffer.getvalue().encode())


class WorkerSync(keras.callbacks.Callback):
    """Among several workers: after each epoch, proves they still train one model.

    Logs this worker's validation figures and weights digest, one line per epoch
    (``[train 1/2] epoch 3: val_loss 1.2345 val_acc 0.4567 weights sha256 ...``), gathers
    every worker's digest and raises ``error`` on every worker if they differ, before the
    epoch is checkpointed. ``digest(model) -> str`` (64 hex digits) and ``gather(array) ->
    [workers, ...]`` come from the trainer and :mod:`components.training.distribute`.
    """

    def __init__(self, digest, gather, tag: str, error=RuntimeError, stream=sys.stdout):
        super().__init__()
        self.digest = digest
        self.gather = gather
        self.tag = tag
        self.error = error
        self.stream = stream

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        digest = self.digest(self.model)
        figures = "  ".join(f"{label} {logs[key]:.6f}" for key, label in (("val_loss", "val_loss"),
                                                                          ("val_accuracy", "val_acc")) if key in logs)
        print(f"{self.tag} epoch {epoch + 1}: {figures}  weights sha256 {digest}", file=self.stream, flush=True)
        digests = [bytes(row).hex() for row in self.gather(np.frombuffer(bytes.fromhex(digest), np.uint8))]
        if len(set(digests)) > 1:
            raise self.error(f"the workers' weights differ after epoch {epoch + 1}: "
                             + ", ".join(f"worker {w} {d[:16]}" for w, d in enumerate(digests)))
