"""``dataset_info.json``: the file that describes a prepared directory.

Kept free of Apache Beam so training and evaluation processes read it without importing
the conversion (about a second and a warning on stderr).
"""
from __future__ import annotations

import json
import os
import pathlib

from components.data.errors import DataError

INFO_FILE = "dataset_info.json"
OUTPUT_SPLITS = ("train", "validation", "test")


def load_dataset_info(directory: str | os.PathLike) -> dict:
    """Read ``dataset_info.json`` of a prepared directory, with a clear error if it is absent or malformed."""
    path = pathlib.Path(directory) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run `python -m pipeline.prepare --dataset "
                        f"{pathlib.Path(directory).name}` first (or `dvc repro`)") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info
