"""Data: dataset descriptions, raw-archive readers, sources and the Beam conversion to TFRecords.

Nothing here imports TensorFlow at module level: Beam workers start fast and the
prepare stage runs without loading TF unless the ``tfds`` source is used.
"""
from components.data.errors import DataError
from components.data.datasets import DATASETS, DatasetSpec, get_dataset, list_datasets

__all__ = ["DATASETS", "DataError", "DatasetSpec", "get_dataset", "list_datasets"]
