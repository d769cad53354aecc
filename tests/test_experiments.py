"""One experiment name resolves to everything derived from it, the same way for every stage."""
from __future__ import annotations

import pathlib

import pytest
import yaml

from components.config import ConfigError, load_params
from components.experiments import catalogue, resolve
from tests.conftest import REPO

PARAMS = {"prepare": {"out_root": "shards"}, "train": {"models_dir": "trained"},
          "experiments": {"a": {"dataset": "cifar10", "model": "resnet20", "recipe": "r"}},
          "zoo": {"a-paper": {"dataset": "cifar10", "model": "resnet20"}},
          "zoo_cpu": {"a-cpu": {"dataset": "cifar10", "model": "resnet20"}}}


def test_every_output_is_keyed_by_the_experiment_not_the_pair():
    experiments = catalogue(PARAMS, root="/repo")
    a, paper = experiments["a"], experiments["a-paper"]
    assert (a.dataset, a.model, a.section) == ("cifar10", "resnet20", "experiments")
    assert (paper.dataset, paper.model, paper.section) == ("cifar10", "resnet20", "zoo")
    layout = {name: str(getattr(a.paths, name)) for name in (
        "data", "model", "train_summary", "train_metrics", "test_metrics", "verdict", "accepted", "history",
        "confusion_json", "confusion_png", "worst_png")}
    assert layout == {
        "data": "/repo/shards/cifar10", "model": "/repo/trained/a/model.keras",
        "train_summary": "/repo/trained/a/train_metrics.json", "train_metrics": "/repo/metrics/a/train.json",
        "test_metrics": "/repo/metrics/a/test.json", "verdict": "/repo/metrics/a/verdict.json",
        "accepted": "/repo/metrics/a/accepted.json", "history": "/repo/plots/a/history.csv",
        "confusion_json": "/repo/plots/a/confusion.json", "confusion_png": "/repo/plots/a/confusion.png",
        "worst_png": "/repo/plots/a/worst.png"}
    assert a.registered_model_name == "a" and paper.registered_model_name == "a-paper"
    # Same data set and model, no file in common but the data.
    files = lambda ref: {getattr(ref.paths, n) for n in ("model", "test_metrics", "accepted", "confusion_json")}
    assert not files(a) & files(paper)
    assert a.paths.data == paper.paths.data


def test_each_set_writes_under_its_own_root_and_names_its_own_stages():
    experiments = catalogue(PARAMS, root="/repo")
    a, paper, cpu = experiments["a"], experiments["a-paper"], experiments["a-cpu"]
    assert (str(paper.paths.model), str(paper.paths.test_metrics), str(paper.paths.history)) == (
        "/repo/zoo/paper/trained/a-paper/model.keras", "/repo/zoo/paper/metrics/a-paper/test.json",
        "/repo/zoo/paper/plots/a-paper/history.csv")
    assert str(cpu.paths.verdict) == "/repo/zoo/cpu/metrics/a-cpu/verdict.json"
    assert cpu.paths.data == a.paths.data == pathlib.Path("/repo/shards/cifar10")  # one prepared copy for all
    assert [ref.stage("evaluate") for ref in (a, paper, cpu)] == [
        "evaluate@a", "zoo/paper/dvc.yaml:evaluate@a-paper", "zoo/cpu/dvc.yaml:evaluate@a-cpu"]
    # No set's output directory lies inside another's: `dvc repro` of one never needs another's stages.
    roots = {name: {ref.paths.model_dir.parent, ref.paths.metrics_dir.parent, ref.paths.plots_dir.parent}
             for name, ref in experiments.items()}
    for name, dirs in roots.items():
        for other, other_dirs in roots.items():
            if other != name:
                assert not any(d == o or d in o.parents or o in d.parents for d in dirs for o in other_dirs), (name, other)


def test_a_name_used_twice_is_an_error_naming_both_places():
    params = {**PARAMS, "zoo_cpu": {"a-paper": {"dataset": "cifar10", "model": "lenet5"}}}
    with pytest.raises(ConfigError, match=r"p.yaml: experiment 'a-paper' is defined twice, as zoo.a-paper and "
                                          r"zoo_cpu.a-paper"):
        catalogue(params, "p.yaml")


def test_a_key_written_twice_in_the_params_file_is_an_error_naming_the_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("zoo_cpu:\n  x-cpu: {dataset: cifar10, model: lenet5}\n  y-cpu: {dataset: cifar10, model: mlp}\n"
                    "  x-cpu: {dataset: cifar10, model: vgg11}\n")
    with pytest.raises(ConfigError, match=r"(?s)params.yaml: not valid YAML.*key 'x-cpu' appears twice \(lines 2 and 4\)"):
        load_params(path)


def test_the_committed_params_give_every_experiment_its_own_files():
    params = load_params(REPO / "params.yaml")
    experiments = catalogue(params)
    assert set(params["experiments"]) | set(params["zoo"]) | set(params["zoo_cpu"]) == set(experiments)
    outputs = [ref.paths.test_metrics for ref in experiments.values()]
    assert len(set(outputs)) == len(outputs)


def test_dvc_yaml_templates_the_same_layout():
    """dvc.yaml declares each experiment's metrics and plots by the resolver's templates."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    ref = resolve("x", {"experiments": {"x": {"dataset": "d", "model": "m"}}})
    declared = {next(iter(entry)) for stage in ("train", "evaluate") for kind in ("metrics", "outs", "plots")
                for entry in stages[stage]["do"].get(kind, []) if isinstance(entry, dict)}
    expected = {str(path).replace("/x/", "/${key}/") for path in (
        ref.paths.train_metrics, ref.paths.history, ref.paths.test_metrics, ref.paths.verdict, ref.paths.accepted,
        ref.paths.confusion_json, ref.paths.confusion_png, ref.paths.worst_png)}
    assert declared == expected
    assert "metrics" not in yaml.safe_load((REPO / "dvc.yaml").read_text())  # no names written by hand


@pytest.mark.parametrize("params, message", [
    ({}, "no experiments; expected a mapping 'experiments'"),
    ({"experiments": ["a"]}, "'experiments' must be a mapping"),
    ({"experiments": {"a": {"dataset": "cifar10"}}}, "experiments.a.model must be a non-empty string, got None"),
    ({"zoo": {"a": "cifar10-lenet5"}}, "zoo.a must be a mapping with 'dataset' and 'model'"),
])
def test_bad_experiment_lists(params, message):
    with pytest.raises(ConfigError, match=message) as error:
        catalogue(params, "p.yaml")
    assert str(error.value).startswith("p.yaml: ")


def test_unknown_experiment_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown experiment 'a-pape'.*Did you mean 'a-paper'"):
        resolve("a-pape", PARAMS, "p.yaml")


def test_train_and_evaluate_resolve_alike(tmp_path):
    """The train stage's Experiment carries the resolver's paths; its data root is prepare.out_root."""
    from components.training.config import load_experiment

    params = load_params(REPO / "params.yaml")
    params["prepare"]["out_root"] = "elsewhere/shards"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    experiment, _ = load_experiment("cifar10-airbench", str(path))
    assert experiment.paths == resolve("cifar10-airbench", params).paths
    assert experiment.paths.data == pathlib.Path("elsewhere/shards/cifar10")
    assert experiment.registered_model_name == "cifar10-airbench"
    params["train"]["data_root"] = "data/tfrecords"  # gone: one key says where the data is
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['data_root'\]"):
        load_experiment("cifar10-airbench", str(path))
