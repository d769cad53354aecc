"""The ``evaluate`` section of params.yaml, and the experiments listed under ``experiments`` / ``zoo``.

No TensorFlow import here, so params are checked before anything heavy loads.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from components.evaluation.errors import EvaluationError


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """How ``python -m pipeline.evaluate`` scores, times and judges one experiment's model."""

    batch_size: int = 256  # images per batch, for scoring the test split and for the images/s figure
    throughput_batches: int = 10  # timed batches of batch_size (after warm-up) behind images/s
    latency_runs: int = 50  # timed single-image calls; the median is reported, in ms
    warmup_runs: int = 3  # untimed calls before each timing (graph tracing, allocator, caches)
    ece_bins: int = 15  # equal-width confidence bins for the expected calibration error
    num_worst: int = 36  # images in the grid of most confidently misclassified test images
    thresholds_file: str = "thresholds.yaml"  # minimum accuracies and the largest allowed drop
    warn_only: bool = False  # on a rejected verdict: print a warning and exit 0 instead of failing

    def __post_init__(self):
        for name in ("batch_size", "throughput_batches", "latency_runs", "ece_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_runs", "num_worst"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.thresholds_file.strip():
            raise ValueError("thresholds_file must name a YAML file, e.g. thresholds.yaml")


EXPERIMENT_SECTIONS = ("experiments", "zoo")  # params.yaml sections that list experiments, as the train stage reads them


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """What evaluation needs to know about one experiment of params.yaml."""

    name: str
    dataset: str  # prepared data set name, e.g. fashion_mnist
    model: str  # zoo model name, e.g. lenet5
    section: str = "experiments"  # where it is listed: experiments (dvc repro) or zoo (long GPU runs)

    @property
    def registered_model_name(self) -> str:
        """The MLflow registry name the train stage registers the model under."""
        return f"{self.dataset}-{self.model}"


def experiment_specs(params: Mapping[str, Any], where: str = "params.yaml") -> dict[str, ExperimentSpec]:
    """Every experiment listed in ``params`` (raw YAML) under ``experiments`` and ``zoo``, by name.

    Same lookup as the train stage: a name in both sections means the ``experiments``
    entry. Reads only the ``dataset`` and ``model`` keys of each entry (the rest belongs
    to the train stage).
    """
    specs: dict[str, ExperimentSpec] = {}
    for section in reversed(EXPERIMENT_SECTIONS):  # experiments last, so it wins
        entries = params.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            raise EvaluationError(f"{where}: '{section}' must be a mapping of experiment names to "
                                  f"{{dataset: ..., model: ...}}, got {type(entries).__name__} {entries!r}")
        for name, entry in entries.items():
            key = f"{section}.{name}"
            if not isinstance(entry, Mapping):
                raise EvaluationError(f"{where}: {key} must be a mapping with 'dataset' and 'model', got {entry!r}")
            values = {}
            for field in ("dataset", "model"):
                value = entry.get(field)
                if not isinstance(value, str) or not value:
                    raise EvaluationError(f"{where}: {key}.{field} must be a non-empty string, got {value!r}")
                values[field] = value
            specs[str(name)] = ExperimentSpec(str(name), values["dataset"], values["model"], section)
    if not specs:
        raise EvaluationError(f"{where}: no experiments; expected a mapping 'experiments' (or 'zoo') of "
                              f"<name>: {{dataset: ..., model: ...}}")
    return specs


def sharing_outputs(specs: Mapping[str, ExperimentSpec], spec: ExperimentSpec) -> list[str]:
    """Other experiments with ``spec``'s (dataset, model): they write the same metrics and plot files.

    ``metrics/<dataset>/<model>.json`` is keyed by the pair, so the last one evaluated
    wins; the regression baseline stays per experiment (see ``verdict.load_baseline``).
    """
    return sorted(name for name, other in specs.items()
                  if name != spec.name and (other.dataset, other.model) == (spec.dataset, spec.model))


def get_experiment(specs: Mapping[str, ExperimentSpec], name: str, where: str = "params.yaml") -> ExperimentSpec:
    """The experiment called ``name``; an unknown name lists the known ones."""
    try:
        return specs[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(specs), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise EvaluationError(f"{where}: no experiment '{name}' under {' or '.join(EXPERIMENT_SECTIONS)} "
                              f"(known: {', '.join(sorted(specs))}).{hint}") from None
