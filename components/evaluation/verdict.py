"""Accept or reject a model: absolute accuracy floors, and no regression against the last accepted run.

Thresholds live in a committed YAML file (``thresholds.yaml`` at the repository root)::

    version: 1
    defaults:
      max_drop: 0.01          # largest allowed accuracy drop vs the last accepted run (absolute)
      min_accuracy: null      # floor for (dataset, model) pairs without an entry; null = none
    min_accuracy:             # per data set, per zoo model name
      fashion_mnist: {lenet5: 0.88}
    experiments:              # optional per-experiment overrides (names from experiments / zoo)
      fmnist_lenet5: {max_drop: 0.02}

Validation: unknown keys anywhere, a value that is not a number in [0, 1], a data set
or model name the project does not know, or an experiment override naming an
experiment listed in neither ``experiments`` nor ``zoo`` of params.yaml are each an
error naming the file and key.
Floors for (dataset, model) pairs no experiment trains are allowed: the table is
reference data, and a ``dvc exp run -S`` that switches models should find its floor.

The baseline ("last accepted metrics") is the metrics JSON of the last accepted run of
the same experiment, kept in ``metrics/<experiment>/accepted.json``, which only an
accepted evaluation writes. With no baseline yet, only the absolute floor applies.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import pathlib
from typing import Any, Callable, Collection, Mapping

import yaml

from components.config import ConfigError, from_dict
from components.evaluation.errors import EvaluationError
from components.evaluation.io import read_json
from components.experiments import ExperimentRef

ACCEPTED, REJECTED = "accepted", "rejected"
# Accuracy comparisons allow this much float noise: 0.90 - 0.89 is 0.010000000000000009
# in binary floating point, which must not fail a max_drop of 0.01.
TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class ThresholdDefaults:
    """Limits that apply where no more specific entry exists."""

    max_drop: float = 0.01  # accuracy, absolute (0.01 = one percentage point)
    min_accuracy: float | None = None  # None: no absolute floor for unlisted (dataset, model) pairs


@dataclasses.dataclass(frozen=True)
class ExperimentLimits:
    """Per-experiment overrides; None keeps the table's / default value."""

    min_accuracy: float | None = None
    max_drop: float | None = None


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The parsed thresholds file."""

    version: int = 1
    defaults: ThresholdDefaults = dataclasses.field(default_factory=ThresholdDefaults)
    min_accuracy: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    experiments: dict[str, ExperimentLimits] = dataclasses.field(default_factory=dict)
    source: str = "thresholds.yaml"  # the file it came from, for messages (not a key in the file)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits that apply to one experiment, each with where it came from."""

    min_accuracy: float | None
    min_accuracy_source: str
    max_drop: float
    max_drop_source: str


def load_thresholds(path: str | pathlib.Path, experiments: Mapping[str, ExperimentRef],
                    known_datasets: Collection[str], known_models: Collection[str]) -> Thresholds:
    """Read and validate the thresholds file at ``path``.

    ``experiments`` are the experiments of params.yaml (overrides must name one);
    ``known_datasets`` / ``known_models`` the data set and zoo names (table keys must be
    among them). Raises EvaluationError naming the file and key on any problem.
    """
    path = pathlib.Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: thresholds file not found (expected a YAML file with 'defaults' and "
                              f"'min_accuracy'; see evaluate.thresholds_file in params.yaml)") from None
    except yaml.YAMLError as error:
        raise EvaluationError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise EvaluationError(f"{path}: expected a mapping with keys version, defaults, min_accuracy, "
                              f"experiments; got {type(raw).__name__} {raw!r}")
    if "source" in raw:
        raise EvaluationError(f"{path}: unknown key 'source'; allowed keys: "
                              f"['defaults', 'experiments', 'min_accuracy', 'version']")
    try:
        thresholds = from_dict(Thresholds, {**raw, "source": str(path)}, where=str(path))
    except ConfigError as error:
        raise EvaluationError(str(error)) from None
    validate_thresholds(thresholds, experiments, known_datasets, known_models)
    return thresholds


def _check_fraction(value: float | None, where: str) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise EvaluationError(f"{where}: expected an accuracy fraction in [0, 1] (e.g. 0.88 for 88%), got {value!r}")


def _unknown(kind: str, name: str, known: Collection[str], where: str) -> EvaluationError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return EvaluationError(f"{where}: unknown {kind} '{name}' (known: {', '.join(sorted(known))}).{hint}")


def validate_thresholds(thresholds: Thresholds, experiments: Mapping[str, ExperimentRef],
                        known_datasets: Collection[str], known_models: Collection[str]) -> None:
    """Check names and ranges in parsed thresholds; EvaluationError naming file and key."""
    source = thresholds.source
    if thresholds.version != 1:
        raise EvaluationError(f"{source}: version: expected 1, got {thresholds.version}")
    _check_fraction(thresholds.defaults.min_accuracy, f"{source}: defaults.min_accuracy")
    _check_fraction(thresholds.defaults.max_drop, f"{source}: defaults.max_drop")
    for dataset, models in thresholds.min_accuracy.items():
        if dataset not in known_datasets:
            raise _unknown("data set", dataset, known_datasets, f"{source}: min_accuracy.{dataset}")
        for model, value in models.items():
            if model not in known_models:
                raise _unknown("model", model, known_models, f"{source}: min_accuracy.{dataset}.{model}")
            _check_fraction(value, f"{source}: min_accuracy.{dataset}.{model}")
    for name, limits in thresholds.experiments.items():
        if name not in experiments:
            raise _unknown("experiment (not in experiments or zoo of params.yaml)", name, experiments,
                           f"{source}: experiments.{name}")
        _check_fraction(limits.min_accuracy, f"{source}: experiments.{name}.min_accuracy")
        _check_fraction(limits.max_drop, f"{source}: experiments.{name}.max_drop")


def limits_for(thresholds: Thresholds, spec: ExperimentRef) -> Limits:
    """The limits for ``spec``: experiment override, else the (dataset, model) table, else defaults."""
    source = thresholds.source
    override = thresholds.experiments.get(spec.name, ExperimentLimits())
    if override.min_accuracy is not None:
        min_accuracy, min_source = override.min_accuracy, f"{source}: experiments.{spec.name}.min_accuracy"
    elif spec.model in thresholds.min_accuracy.get(spec.dataset, {}):
        min_accuracy = thresholds.min_accuracy[spec.dataset][spec.model]
        min_source = f"{source}: min_accuracy.{spec.dataset}.{spec.model}"
    else:
        min_accuracy, min_source = thresholds.defaults.min_accuracy, f"{source}: defaults.min_accuracy"
    if override.max_drop is not None:
        max_drop, drop_source = override.max_drop, f"{source}: experiments.{spec.name}.max_drop"
    else:
        max_drop, drop_source = thresholds.defaults.max_drop, f"{source}: defaults.max_drop"
    return Limits(min_accuracy, min_source, max_drop, drop_source)


def load_baseline(path: str | pathlib.Path, experiment: str | None = None) -> dict[str, Any] | None:
    """The last accepted metrics of ``experiment`` (``metrics/<experiment>/accepted.json``), or None.

    None when the file is absent or holds the "nothing accepted yet" marker. A file that
    does not parse, has no numeric ``accuracy``, or records another experiment is an
    error naming the file: silently dropping (or borrowing) the baseline would disable
    the regression check.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return None
    data = read_json(path, "the metrics of the last accepted evaluation (a JSON object with 'accuracy')")
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object with 'accuracy', got {type(data).__name__}")
    if data.get("accepted") is False:  # the marker a rejected first run leaves (see no_baseline_record)
        return None
    value = data.get("accuracy")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluationError(f"{path}: 'accuracy' must be a finite number, got {value!r}; fix the file, or "
                              f"delete it to evaluate without a baseline")
    recorded = data.get("experiment")
    if experiment is not None and recorded is not None and recorded != experiment:
        raise EvaluationError(f"{path}: holds the accepted metrics of experiment '{recorded}', expected "
                              f"'{experiment}'; delete the file to evaluate without a baseline")
    return data


def baseline_record(metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The content of ``accepted.json`` after an accepted evaluation: its metrics, marked accepted."""
    return {**metrics, "accepted": True, **extra}


def no_baseline_record(experiment: str, dataset: str, model: str) -> dict[str, Any]:
    """The ``accepted.json`` a rejected run writes when none exists yet.

    DVC requires every declared output to exist after the stage, and the accepted file
    is one (``persist: true``); this marker says "nothing accepted yet", which
    :func:`load_baseline` reads as no baseline.
    """
    return {"experiment": experiment, "dataset": dataset, "model": model, "accepted": False,
            "note": "no accepted evaluation yet; the first accepted run replaces this file"}


def decide(metrics: Mapping[str, Any], limits: Limits, baseline: Mapping[str, Any] | None,
           baseline_path: str | None = None) -> dict[str, Any]:
    """The verdict on ``metrics`` (needs ``accuracy``) under ``limits`` and an optional ``baseline``.

    Returns ``{"status": "accepted"|"rejected", "reasons": [str, ...], "checked": [...],
    "baseline": {...} | None}``. ``reasons`` lists every failed check (empty when
    accepted); ``checked`` records each check with its value, threshold and outcome,
    including skipped ones.
    """
    value = metrics.get("accuracy")
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    checked: list[dict[str, Any]] = []
    reasons: list[str] = []
    if not finite:
        reasons.append(f"accuracy is {value!r}, not a finite number")
        checked.append({"check": "accuracy_is_finite", "value": value, "passed": False})

    # Absolute floor.
    if limits.min_accuracy is None:
        checked.append({"check": "min_accuracy", "metric": "accuracy", "value": value, "threshold": None,
                        "passed": None, "skipped": f"no minimum set ({limits.min_accuracy_source} is null)",
                        "source": limits.min_accuracy_source})
    else:
        passed = finite and value >= limits.min_accuracy - TOLERANCE
        checked.append({"check": "min_accuracy", "metric": "accuracy", "value": value,
                        "threshold": limits.min_accuracy, "passed": bool(passed),
                        "source": limits.min_accuracy_source})
        if finite and not passed:
            reasons.append(f"accuracy {value:.4f} is below the minimum {limits.min_accuracy:.4f} "
                           f"({limits.min_accuracy_source})")

    # Regression against the last accepted run.
    if baseline is None:
        checked.append({"check": "max_drop", "metric": "accuracy", "value": value, "threshold": limits.max_drop,
                        "passed": None, "skipped": "no previous accepted metrics of this experiment",
                        "source": limits.max_drop_source})
    else:
        reference = float(baseline["accuracy"])
        drop = reference - value if finite else None
        passed = finite and drop <= limits.max_drop + TOLERANCE
        checked.append({"check": "max_drop", "metric": "accuracy", "value": value, "baseline_value": reference,
                        "drop": drop, "threshold": limits.max_drop, "passed": bool(passed),
                        "source": limits.max_drop_source})
        if finite and not passed:
            reasons.append(f"accuracy {value:.4f} dropped {drop:.4f} from the last accepted {reference:.4f} "
                           f"(largest allowed drop {limits.max_drop:.4f}, {limits.max_drop_source}; "
                           f"baseline {baseline_path or 'last accepted metrics'})")

    summary = None
    if baseline is not None:
        summary = {"path": baseline_path, "experiment": baseline.get("experiment"),
                   "accuracy": float(baseline["accuracy"]),
                   "mlflow_run_id": baseline.get("mlflow_run_id"),
                   "registered_model_version": baseline.get("registered_model_version")}
    return {"status": REJECTED if reasons else ACCEPTED, "reasons": reasons, "checked": checked,
            "baseline": summary}


def rejection_message(verdict: Mapping[str, Any], experiment: str, verdict_path: str | None = None) -> str:
    """A multi-line message listing every reason a verdict rejected ``experiment``."""
    lines = [f"evaluation of '{experiment}' rejected"
             + (f" (verdict in {verdict_path})" if verdict_path else "") + ":"]
    lines += [f"  - {reason}" for reason in verdict["reasons"]]
    return "\n".join(lines)
