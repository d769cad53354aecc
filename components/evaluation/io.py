"""Atomic writes and strict reads of the small files evaluation produces and consumes.

Every output goes to a temporary file in the destination directory, then ``os.replace``
moves it into place: a crash or a full disk leaves the previous file or none, never a
truncated JSON that a later run (or ``dvc metrics diff``) would choke on.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any, Callable

from components.evaluation.errors import EvaluationError


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> pathlib.Path:
    """Create ``path`` by calling ``write(temp_path)`` and renaming the result into place.

    The temporary file sits beside ``path`` (same file system, so the rename is atomic)
    and keeps ``path``'s suffix, so writers that pick a format by extension (matplotlib)
    behave. The parent directory is created when missing.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o644)  # mkstemp creates 0600; outputs are ordinary repository files
        os.replace(temp, path)
    except BaseException:
        pathlib.Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda temp: pathlib.Path(temp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> pathlib.Path:
    """Write ``data`` as indented, key-ordered-as-given JSON to ``path`` atomically.

    NaN and infinity are refused (they are not JSON, and DVC's parser rejects them):
    callers turn them into ``null`` first (see :func:`json_safe`).
    """
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (recursively), for JSON output."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse the JSON file ``path``; ``what`` says in the error what the file should have been.

    Raises EvaluationError naming the file when it is missing or does not parse.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvaluationError(f"{path}: not found (expected {what})") from None
    except OSError as error:
        raise EvaluationError(f"{path}: cannot read {what} ({error.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error}); expected {what}. Fix or delete the file.") from None
