"""Keras callbacks of the trainer: progress lines, history, and resumable checkpoints."""
from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import sys
import time

import keras
import numpy as np

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                  "epoch_time_s", "images_per_s")


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer used for its last step (schedules evaluated at that step)."""
    rate = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(rate))


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, path)


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


class Checkpointer(keras.callbacks.Callback):
    """Saves everything needed to resume after each epoch, and the best weights so far.

    ``last.weights.h5`` (model and optimizer state, so the step count and the schedule
    continue), ``best.weights.h5`` (highest validation accuracy) and ``state.json``
    (completed epochs, history, best score, fingerprint) are each replaced atomically,
    state last: after a ``kill -9`` the directory always describes a completed epoch.
    """

    def __init__(self, directory: pathlib.Path, fingerprint: dict, history: list[dict], best: float,
                 extra_state: dict | None = None, monitor: str = "val_accuracy"):
        super().__init__()
        self.directory = directory
        self.fingerprint = fingerprint
        self.history = history
        self.best = best
        self.extra_state = dict(extra_state or {})
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in HISTORY_FIELDS[1:] if k in logs}}
        self.history[:] = [r for r in self.history if r["epoch"] < epoch + 1] + [row]
        self.directory.mkdir(parents=True, exist_ok=True)
        score = logs.get(self.monitor)
        if score is not None and score > self.best:
            self.best = float(score)
            self._save_weights("best.weights.h5")
        self._save_weights("last.weights.h5")
        state = {"completed_epochs": epoch + 1, "best": self.best, "monitor": self.monitor,
                 "fingerprint": self.fingerprint, "history": self.history, **self.extra_state}
        write_atomically(self.directory / "state.json", json.dumps(state, indent=1).encode())

    def _save_weights(self, name: str) -> None:
        temp = self.directory / f".tmp-{name}"
        self.model.save_weights(str(temp), overwrite=True)
        os.replace(temp, self.directory / name)


def write_history_csv(history: list[dict], path: pathlib.Path) -> None:
    """The per-epoch history as CSV (DVC plots read it directly)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    write_atomically(path, buffer.getvalue().encode())
