"""The verdict: thresholds file validation, absolute floors, regression against the last accepted run."""
from __future__ import annotations

import json
import math
import pathlib

import pytest

from components.evaluation import EvaluationError
from components.evaluation.config import EvaluateConfig
from components.experiments import catalogue
from components.evaluation.verdict import (
    ACCEPTED, REJECTED, Limits, decide, limits_for, load_baseline, load_thresholds, rejection_message,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ["cifar10", "cifar100", "fashion_mnist", "mnist"]
MODELS = ["baseline", "lenet5", "mlp", "resnet20", "vgg16"]
SPECS = catalogue({"experiments": {"fmnist_lenet5": {"dataset": "fashion_mnist", "model": "lenet5"},
                                   "cifar_resnet20": {"dataset": "cifar10", "model": "resnet20"}}})
LIMITS = Limits(0.88, "t.yaml: min_accuracy.fashion_mnist.lenet5", 0.01, "t.yaml: defaults.max_drop")


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- decide
def test_accepted_when_above_floor_and_no_baseline():
    verdict = decide({"accuracy": 0.90}, LIMITS, baseline=None)
    assert verdict["status"] == ACCEPTED and verdict["reasons"] == [] and verdict["baseline"] is None
    floor, drop = verdict["checked"]
    assert floor == {"check": "min_accuracy", "metric": "accuracy", "value": 0.90, "threshold": 0.88,
                     "passed": True, "source": LIMITS.min_accuracy_source}
    assert drop["passed"] is None and "no previous accepted metrics" in drop["skipped"]  # first run: floor only


def test_rejected_below_the_absolute_floor():
    verdict = decide({"accuracy": 0.80}, LIMITS, baseline=None)
    assert verdict["status"] == REJECTED
    assert verdict["reasons"] == ["accuracy 0.8000 is below the minimum 0.8800 "
                                  "(t.yaml: min_accuracy.fashion_mnist.lenet5)"]


def test_rejected_on_regression_against_the_last_accepted_run():
    verdict = decide({"accuracy": 0.90}, LIMITS, {"accuracy": 0.93, "experiment": "fmnist_lenet5"},
                     "metrics/fashion_mnist/lenet5.accepted.json")
    assert verdict["status"] == REJECTED
    (reason,) = verdict["reasons"]
    assert "dropped 0.0300 from the last accepted 0.9300" in reason and "largest allowed drop 0.0100" in reason
    assert "metrics/fashion_mnist/lenet5.accepted.json" in reason
    check = verdict["checked"][1]
    assert check["baseline_value"] == 0.93 and check["drop"] == pytest.approx(0.03) and check["passed"] is False
    assert verdict["baseline"]["accuracy"] == 0.93


def test_a_drop_of_exactly_max_drop_passes_despite_float_noise():
    assert 0.90 - 0.89 > 0.01  # 0.010000000000000009 in binary floating point
    assert decide({"accuracy": 0.89}, LIMITS, {"accuracy": 0.90})["status"] == ACCEPTED


def test_an_improvement_passes_the_regression_check():
    verdict = decide({"accuracy": 0.95}, LIMITS, {"accuracy": 0.90})
    assert verdict["status"] == ACCEPTED and verdict["checked"][1]["drop"] == pytest.approx(-0.05)


def test_every_reason_is_listed():
    verdict = decide({"accuracy": 0.70}, LIMITS, {"accuracy": 0.90})
    assert len(verdict["reasons"]) == 2
    message = rejection_message(verdict, "fmnist_lenet5", "metrics/x.verdict.json")
    assert message.splitlines()[0] == "evaluation of 'fmnist_lenet5' rejected (verdict in metrics/x.verdict.json):"
    assert all(f"  - {reason}" in message for reason in verdict["reasons"])


def test_no_floor_configured_means_only_the_regression_check():
    limits = Limits(None, "t.yaml: defaults.min_accuracy", 0.01, "t.yaml: defaults.max_drop")
    verdict = decide({"accuracy": 0.11}, limits, None)
    assert verdict["status"] == ACCEPTED
    assert verdict["checked"][0]["passed"] is None and "no minimum set" in verdict["checked"][0]["skipped"]


def test_a_nan_accuracy_is_rejected():
    verdict = decide({"accuracy": math.nan}, LIMITS, {"accuracy": 0.9})
    assert verdict["status"] == REJECTED and "not a finite number" in verdict["reasons"][0]


# ----------------------------------------------------------------------------- thresholds file
GOOD = """\
version: 1
defaults: {max_drop: 0.02, min_accuracy: 0.3}
min_accuracy:
  fashion_mnist: {lenet5: 0.88}
  cifar10: {vgg16: 0.5}
experiments:
  cifar_resnet20: {max_drop: 0.05}
"""


def test_limits_come_from_override_then_table_then_defaults(tmp_path):
    thresholds = load_thresholds(write(tmp_path / "t.yaml", GOOD), SPECS, DATASETS, MODELS)
    lenet = limits_for(thresholds, SPECS["fmnist_lenet5"])
    assert (lenet.min_accuracy, lenet.max_drop) == (0.88, 0.02)
    assert lenet.min_accuracy_source == f"{tmp_path / 't.yaml'}: min_accuracy.fashion_mnist.lenet5"
    resnet = limits_for(thresholds, SPECS["cifar_resnet20"])  # no table entry: default floor, own max_drop
    assert (resnet.min_accuracy, resnet.max_drop) == (0.3, 0.05)
    assert resnet.max_drop_source.endswith("experiments.cifar_resnet20.max_drop")


def test_the_committed_thresholds_file_is_valid():
    from components.data.datasets import list_datasets
    from components.models import list_models

    from components.config import load_params

    specs = catalogue(load_params(REPO / "params.yaml"), "params.yaml")
    thresholds = load_thresholds(REPO / "thresholds.yaml", specs, list_datasets(), list_models())
    assert thresholds.min_accuracy["fashion_mnist"]["lenet5"] == 0.88
    assert 0 < thresholds.defaults.max_drop <= 0.05


@pytest.mark.parametrize("text, message", [
    ("version: 1\nmin_accuracy: {fashion_mnist: {lenet5: 0.88}\n", "not valid YAML"),
    ("- 0.88\n", "expected a mapping with keys"),
    ("version: 1\nmax_drop: 0.01\n", r"unknown key\(s\) \['max_drop'\] for Thresholds"),
    ("defaults: {max_drop: 0.01, min_acc: 0.5}\n", r"defaults: unknown key\(s\) \['min_acc'\]"),
    ("min_accuracy: {fashion_mnist: {lenet5: high}}\n", "min_accuracy.fashion_mnist.lenet5: expected a number"),
    ("min_accuracy: {fashion_mnist: {lenet5: 88}}\n", "expected an accuracy fraction in \\[0, 1\\].*got 88"),
    ("min_accuracy: {fashion: {lenet5: 0.8}}\n", "unknown data set 'fashion'.*Did you mean 'fashion_mnist'"),
    ("min_accuracy: {cifar10: {resnet2: 0.8}}\n", "min_accuracy.cifar10.resnet2: unknown model 'resnet2'"),
    ("experiments: {fmnist_lenet: {max_drop: 0.1}}\n",
     "experiments.fmnist_lenet: unknown experiment .not in experiments or zoo.*Did you mean 'fmnist_lenet5'"),
    ("version: 2\n", "version: expected 1, got 2"),
    ("source: x\n", "unknown key 'source'"),
])
def test_bad_thresholds_files_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path / "thresholds.yaml", text)
    with pytest.raises(EvaluationError, match=message) as error:
        load_thresholds(path, SPECS, DATASETS, MODELS)
    assert str(path) in str(error.value)


def test_missing_thresholds_file(tmp_path):
    with pytest.raises(EvaluationError, match="thresholds file not found"):
        load_thresholds(tmp_path / "nope.yaml", SPECS, DATASETS, MODELS)


# ----------------------------------------------------------------------------- baseline
def test_baseline_absent_is_none(tmp_path):
    assert load_baseline(tmp_path / "lenet5.accepted.json") is None


def test_baseline_read(tmp_path):
    path = write(tmp_path / "a.json", json.dumps({"experiment": "x", "accuracy": 0.9}))
    assert load_baseline(path, "x")["accuracy"] == 0.9


def test_the_nothing_accepted_marker_is_no_baseline(tmp_path):
    from components.evaluation.verdict import no_baseline_record

    path = write(tmp_path / "a.json", json.dumps(no_baseline_record("x", "cifar10", "lenet5")))
    assert load_baseline(path, "x") is None


def test_a_baseline_of_another_experiment_is_an_error(tmp_path):
    """Each experiment has its own accepted.json: another's there is a copied or stale file, never borrowed."""
    path = write(tmp_path / "a.json", json.dumps({"experiment": "cifar10-resnet18-tutorial", "accuracy": 0.9}))
    with pytest.raises(EvaluationError, match="holds the accepted metrics of experiment 'cifar10-resnet18-tutorial', "
                                              "expected 'cifar10-resnet18-cosine'") as error:
        load_baseline(path, "cifar10-resnet18-cosine")
    assert str(path) in str(error.value)


@pytest.mark.parametrize("text, message", [
    ('{"accuracy": 0.9', "not valid JSON"),
    ('{"accuracy": "high"}', "'accuracy' must be a finite number, got 'high'"),
    ("[0.9]", "expected a JSON object"),
])
def test_unparseable_baseline_is_an_error_naming_the_file(tmp_path, text, message):
    path = write(tmp_path / "lenet5.accepted.json", text)
    with pytest.raises(EvaluationError, match=message) as error:
        load_baseline(path)
    assert str(path) in str(error.value)


# ----------------------------------------------------------------------------- params
def test_evaluate_config_checks_values():
    from components.config import ConfigError, from_dict

    assert from_dict(EvaluateConfig, {"batch_size": 128}).batch_size == 128
    with pytest.raises(ConfigError, match="evaluate: unknown key"):
        from_dict(EvaluateConfig, {"batch": 128}, where="params.yaml:evaluate")
    with pytest.raises(ConfigError, match="latency_runs must be >= 1"):
        from_dict(EvaluateConfig, {"latency_runs": 0}, where="params.yaml:evaluate")
