"""The test split of a prepared data set as NumPy arrays, read without TensorFlow."""
from __future__ import annotations

import os
import pathlib

import numpy as np

from components.data.errors import DataError
from components.data.info import INFO_FILE
from components.evaluation.errors import EvaluationError


def load_split(data_dir: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray, dict]:
    """Every example of ``split`` in the prepared ``data_dir``, once, in the pipeline's stable order.

    Returns ``(images uint8 [N, H, W, C], labels int64 [N], the prepared directory's info)``,
    read without TensorFlow (:func:`components.inputs.arrays.read_split`, the order of the
    tf.data evaluation pipeline), so it serves either backend. Every record is checked as
    it is read (checksums, counts, schema, shape, label range). A missing or broken
    directory raises EvaluationError naming it and the command that prepares it.
    """
    from components.inputs.arrays import read_split
    from components.inputs.shards import check_prepared

    data_dir = pathlib.Path(data_dir)
    try:
        info = check_prepared(data_dir, (split,), mode="none")
        images_array, labels_array = read_split(data_dir, split, info)
    except DataError as error:
        hint = "" if "pipeline.prepare" in str(error) else (
            f"; prepare it again with `python -m pipeline.prepare --dataset {data_dir.name}` (or `dvc repro`)")
        raise EvaluationError(f"{split} data not usable: {error}{hint}") from None
    expected = info["splits"][split]["examples"]
    if len(labels_array) != expected:  # the pipeline's contract: every example exactly once
        raise EvaluationError(f"{data_dir}: read {len(labels_array)} {split} examples, "
                              f"{INFO_FILE} says {expected}")
    return images_array, labels_array, info
