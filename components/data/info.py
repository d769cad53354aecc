"""``prepare_info.json``: the prepare stage's own description of a prepared directory.

It is also the directory's completeness marker: the prepare stage writes it last, after
the shards and tensorflow-datasets' metadata, so a directory without it is not prepared
and every reader here refuses it. ``dataset_info.json`` and ``features.json`` beside it
belong to tensorflow-datasets (``tfds.builder_from_directory`` reads them).

Kept free of Apache Beam, TensorFlow and tensorflow-datasets: training and evaluation
processes import it, and importing the conversion costs about a second and a warning
on stderr.
"""
from __future__ import annotations

import json
import os
import pathlib

from components.data.errors import DataError

INFO_FILE = "prepare_info.json"
# tensorflow-datasets' own metadata file (tfds.folder_dataset.write_metadata writes it);
# named here only to recognise a directory that has it but not INFO_FILE.
TFDS_INFO_FILE = "dataset_info.json"
OUTPUT_SPLITS = ("train", "validation", "test")


def load_dataset_info(directory: str | os.PathLike) -> dict:
    """Read ``prepare_info.json`` of a prepared directory, with a clear error if it is absent or malformed.

    Its absence means the directory is not (completely) prepared, whatever else it holds.
    """
    directory = pathlib.Path(directory)
    path = directory / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found, so {directory} is not a completely prepared directory"
                        f"{_tfds_only_hint(directory)}; run `python -m pipeline.prepare --dataset "
                        f"{directory.name}` first (or `dvc repro`)") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info


def _tfds_only_hint(directory: pathlib.Path) -> str:
    """Why a directory may hold ``dataset_info.json`` but not INFO_FILE, if it does."""
    if not (directory / TFDS_INFO_FILE).is_file():
        return ""
    return (f" (the {TFDS_INFO_FILE} there is tensorflow-datasets' metadata, or an older prepare "
            f"stage's info file; neither marks a complete output)")
