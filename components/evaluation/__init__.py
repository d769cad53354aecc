"""Evaluation: score exported models on the test split, judge them against thresholds, report.

* :mod:`~components.evaluation.metrics` -- accuracy, top-5, loss, per-class P/R/F1,
  confusion matrix, ECE, in NumPy (no TensorFlow).
* :mod:`~components.evaluation.verdict` -- thresholds file, baseline, accepted/rejected.
* :mod:`~components.evaluation.evaluate` -- the evaluate stage for one experiment
  (imports TensorFlow when called).
* :mod:`~components.evaluation.report` -- ``reports/summary.md`` and charts.
* :mod:`~components.evaluation.references` -- the tutorials' and papers' figures.

Importing this package is cheap: TensorFlow, Keras, matplotlib and MLflow load only
inside the functions that need them.
"""
from components.evaluation.config import EvaluateConfig
from components.evaluation.errors import EvaluationError

__all__ = ["EvaluateConfig", "EvaluationError"]
