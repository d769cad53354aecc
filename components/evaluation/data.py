"""The test split of a prepared data set as NumPy arrays, read with the project's input pipeline."""
from __future__ import annotations

import os
import pathlib

import numpy as np

from components.data.errors import DataError
from components.data.info import INFO_FILE
from components.evaluation.errors import EvaluationError


def load_split(data_dir: str | os.PathLike, split: str = "test", batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every example of ``split`` in the prepared ``data_dir``, once, in the pipeline's stable order.

    Returns ``(images uint8 [N, H, W, C], labels int64 [N], the prepared directory's info)``. The shards are
    verified in full first (checksums, counts, schema). A missing or broken directory
    raises EvaluationError naming it and the command that prepares it.
    """
    from components.inputs import InputConfig, build_dataset, check_prepared

    data_dir = pathlib.Path(data_dir)
    try:
        info = check_prepared(data_dir, (split,), mode="full")
        dataset = build_dataset(data_dir, split, InputConfig(batch_size=batch_size), training=False)
        images, labels = [], []
        for batch_images, batch_labels in dataset.as_numpy_iterator():
            images.append(batch_images)
            labels.append(batch_labels)
    except DataError as error:
        hint = "" if "pipeline.prepare" in str(error) else (
            f"; prepare it again with `python -m pipeline.prepare --dataset {data_dir.name}` (or `dvc repro`)")
        raise EvaluationError(f"{split} data not usable: {error}{hint}") from None
    images_array, labels_array = np.concatenate(images), np.concatenate(labels).astype(np.int64)
    expected = info["splits"][split]["examples"]
    if len(labels_array) != expected:  # the pipeline's contract: every example exactly once
        raise EvaluationError(f"{data_dir}: read {len(labels_array)} {split} examples, "
                              f"{INFO_FILE} says {expected}")
    return images_array, labels_array, info
