"""The comparison report renders from fixture metrics files (and MLflow when a store is given)."""
from __future__ import annotations

import json
import pathlib

import pytest

from components.evaluation import EvaluationError
from components.evaluation.report import build_report, collect_rows, metrics_files


def write_json(path: pathlib.Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def metrics(experiment: str, dataset: str, model: str, accuracy: float, params: int) -> dict:
    return {"experiment": experiment, "dataset": dataset, "model": model, "accuracy": accuracy,
            "top5_accuracy": 0.99, "top_k": 5, "loss": 0.4, "ece": 0.02, "macro_f1": accuracy, "examples": 10000,
            "images_per_s": 5123.4, "latency_ms": 1.25, "params": params, "size_bytes": 4 * params,
            "per_class": {"a": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 5000}}}


@pytest.fixture
def fixture_repo(tmp_path):
    """Three evaluated experiments on two data sets, as the evaluate and train stages leave them."""
    m = tmp_path / "metrics"
    write_json(m / "fmnist_lenet5" / "test.json", metrics("fmnist_lenet5", "fashion_mnist", "lenet5", 0.8912, 61706))
    write_json(m / "fmnist_lenet5" / "verdict.json", {"status": "accepted", "reasons": []})
    write_json(m / "fmnist_lenet5" / "accepted.json", metrics("fmnist_lenet5", "fashion_mnist", "lenet5",
                                                              0.8912, 61706))
    write_json(m / "cifar_resnet20" / "test.json", metrics("cifar_resnet20", "cifar10", "resnet20", 0.6543, 272474))
    write_json(m / "cifar_resnet20" / "verdict.json", {"status": "rejected", "reasons": ["x"]})
    write_json(m / "cifar_lenet5" / "test.json", metrics("cifar_lenet5", "cifar10", "lenet5", 0.5012, 62006))
    write_json(m / "fmnist_lenet5" / "train.json",
               {"experiment": "fmnist_lenet5", "train_time_s": 95.0, "images_per_s": 1900.0,
                "mlflow_run_id": None, "registered_model_version": None})
    write_json(m / "cifar_resnet20" / "train.json",
               {"experiment": "cifar_resnet20", "train_time_s": 4000.0, "images_per_s": 190.0, "epochs": 80,
                "precision": "mixed_bfloat16", "device": "CPU"})
    return tmp_path


def test_companion_files_are_not_rows(fixture_repo):
    names = [p.relative_to(fixture_repo / "metrics").as_posix() for p in metrics_files(fixture_repo / "metrics")]
    assert names == ["cifar_lenet5/test.json", "cifar_resnet20/test.json", "fmnist_lenet5/test.json"]


def test_a_metrics_file_of_another_experiment_is_an_error(fixture_repo):
    write_json(fixture_repo / "metrics" / "copied" / "test.json",
               metrics("cifar_lenet5", "cifar10", "lenet5", 0.5, 62006))
    with pytest.raises(EvaluationError, match="holds experiment 'cifar_lenet5', but its directory names 'copied'"):
        collect_rows(fixture_repo / "metrics")


def test_report_renders_from_fixture_metrics(fixture_repo):
    from PIL import Image

    summary = build_report(fixture_repo / "metrics", fixture_repo / "reports",
                           use_mlflow=False, log=lambda *_: None)
    text = summary.read_text()
    text, seeds = text.split("## Against the seed tutorials' CIFAR-10 table")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| experiment"))
    assert "| accuracy | tutorial | paper | params | training time | train images/s |" in header
    rows = [line for line in lines if line.startswith("| ") and not line.startswith(("| experiment", "| ---"))]
    assert [r.split(" | ")[0] for r in rows] == ["| cifar_resnet20", "| cifar_lenet5", "| fmnist_lenet5"]
    # The resnet20 row: ours, the seed tutorial's figure, the paper's, params, time, rates, verdict.
    assert rows[0] == ("| cifar_resnet20 | cifar10 | resnet20 | 65.43% | 72.8%* | 91.25% | 272.5k | 66.7 min "
                       "| 190 | 5,123 | 1.25 | rejected |")
    assert rows[1].startswith("| cifar_lenet5 | cifar10 | lenet5 | 50.12% | below 50% | - | 62.0k | - | - |")
    assert rows[2] == ("| fmnist_lenet5 | fashion_mnist | lenet5 | 89.12% | - | 87.6-93.2% | 61.7k | 95 s "
                       "| 1,900 | 5,123 | 1.25 | accepted |")
    assert "cifar10/resnet20, paper 91.25%: He et al. 2016; Keras example 92.16%" in text
    assert "![Accuracy against parameters](accuracy_vs_params.png)" in text
    for chart in ("accuracy_vs_params.png", "accuracy_vs_train_time.png"):
        with Image.open(fixture_repo / "reports" / chart) as image:
            assert image.format == "PNG" and image.size[0] > 300
    # The seed tutorials' CIFAR-10 table, then every run of the report with what it cost (issue 14).
    seed_rows = [line for line in seeds.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[1] for row in seed_rows[:5]] == ["AlexNet", "VGG", "GoogLeNet", "ResNet", "DenseNet"]
    assert seed_rows[4] == "| seed 000 | DenseNet | cifar10 | 85.0% | - | 20k steps of 64 | - | GPU |"
    assert seed_rows[5:] == [
        "| cifar_resnet20 | resnet20 | cifar10 | 65.43% | 272.5k | 80 epochs, 66.7 min | mixed_bfloat16 | CPU |",
        "| cifar_lenet5 | lenet5 | cifar10 | 50.12% | 62.0k | -, - | - | - |",
        "| fmnist_lenet5 | lenet5 | fashion_mnist | 89.12% | 61.7k | -, 95 s | - | - |"]


def test_report_takes_run_time_and_champion_from_mlflow(fixture_repo, tmp_path):
    import mlflow

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment_id, start_time=1_000_000)
    client.set_terminated(run.info.run_id, end_time=1_000_000 + 100_000)  # 100 s, in ms
    client.create_registered_model("cifar_lenet5")
    version = client.create_model_version("cifar_lenet5", "file:///nowhere", run_id=run.info.run_id)
    client.set_registered_model_alias("cifar_lenet5", "champion", version.version)
    write_json(fixture_repo / "metrics" / "cifar_lenet5" / "train.json",
               {"mlflow_run_id": run.info.run_id, "registered_model_name": "cifar_lenet5",
                "registered_model_version": str(version.version)})
    try:
        summary = build_report(fixture_repo / "metrics", fixture_repo / "reports",
                               tracking_uri=uri, log=lambda *_: None)
    finally:
        mlflow.set_tracking_uri(previous)
    row = next(line for line in summary.read_text().splitlines() if line.startswith("| cifar_lenet5"))
    assert "| 100 s |" in row and row.endswith("| - (champion) |")
    assert "and the MLflow runs." in summary.read_text()


def test_unreachable_mlflow_is_a_note_not_a_failure(fixture_repo, monkeypatch):
    import mlflow

    # configure_tracking sets these with setdefault; setting them here lets monkeypatch restore them.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    previous = mlflow.get_tracking_uri()
    notes = []
    try:
        build_report(fixture_repo / "metrics", fixture_repo / "reports",
                     tracking_uri="http://127.0.0.1:9", log=notes.append)  # port 9: nothing listens
    finally:
        mlflow.set_tracking_uri(previous)
    assert any("MLflow not used for the report" in n for n in notes)


def test_unparseable_metrics_file_is_an_error_naming_it(fixture_repo):
    bad = fixture_repo / "metrics" / "cifar_vgg16" / "test.json"
    bad.parent.mkdir()
    bad.write_text('{"accuracy": ')
    with pytest.raises(EvaluationError, match="not valid JSON") as error:
        collect_rows(fixture_repo / "metrics")
    assert str(bad) in str(error.value)
    bad.write_text('{"accuracy": "high", "experiment": "x"}')
    with pytest.raises(EvaluationError, match="numeric 'accuracy'"):
        collect_rows(fixture_repo / "metrics")


def test_cli_without_metrics_exits_2(tmp_path, monkeypatch, capsys):
    from pipeline.report import main

    monkeypatch.chdir(tmp_path)
    assert main(["--no-mlflow"]) == 2
    assert "no metrics files" in capsys.readouterr().err


def test_the_zoo_report_lists_every_experiment_of_the_set_evaluated_or_not(fixture_repo):
    """A set built over several sittings: evaluated lines carry the measured figures, the
    others say "not run yet"; parameters and MACs come from building the model."""
    from components.evaluation.zoo_report import build_set_report
    from components.models import create_model
    from components.models.summary import describe

    params = {
        "prepare": {"datasets": ["fashion_mnist", "cifar10"]},
        "recipes": {"budget": {"optimizer": {"name": "adam", "learning_rate": 0.002}, "epochs": 5, "batch_size": 128}},
        "experiments": {"fmnist_lenet5": {"dataset": "fashion_mnist", "model": "lenet5", "recipe": "budget"}},
        "zoo_cpu": {"cifar10-lenet5-cpu": {"dataset": "cifar10", "model": "lenet5", "recipe": "budget"},
                    "cifar10-resnet20-cpu": {"dataset": "cifar10", "model": "resnet20", "recipe": "budget",
                                             "overrides": {"steps": 64, "batch_size": 32}}}}
    m = fixture_repo / "zoo" / "cpu" / "metrics" / "cifar10-lenet5-cpu"
    write_json(m / "test.json", metrics("cifar10-lenet5-cpu", "cifar10", "lenet5", 0.5321, 62006))
    write_json(m / "train.json", {"experiment": "cifar10-lenet5-cpu", "epochs": 5, "steps_per_epoch": 351,
                                  "train_time_s": 95.0, "images_per_s": 1730.0})
    write_json(m / "verdict.json", {"status": "accepted", "checked": [
        {"check": "min_accuracy", "threshold": 0.45, "value": 0.5321, "passed": True}]})
    summary = build_set_report("zoo_cpu", params, "p.yaml", use_mlflow=False, root=fixture_repo, log=lambda *_: None)
    assert summary == fixture_repo / "zoo" / "cpu" / "reports" / "summary.md"
    text = summary.read_text()
    assert "## The `zoo_cpu` set: 1 of 2 experiments evaluated, 1 accepted" in text
    lenet = next(line for line in text.splitlines() if line.startswith("| cifar10-lenet5-cpu |"))
    cells = [cell.strip() for cell in lenet.strip("|").split("|")]
    macs = describe(create_model("lenet5", (32, 32, 3), 10), "lenet5").macs
    assert cells[:12] == ["cifar10-lenet5-cpu", "lenet5", "lenet", "62.0k", f"{macs / 1e3:.1f}k", "5 epochs of 128",
                          f"{5 * 351 * 128:,}", "1,730", "95 s", "53.21%", "45.00%", "accepted"]
    resnet = next(line for line in text.splitlines() if line.startswith("| cifar10-resnet20-cpu |"))
    assert "| 64 steps of 32 | not run yet |" in resnet
    # The comparison beside the default experiments (fixture_repo/metrics) and its charts.
    assert "| fmnist_lenet5 | fashion_mnist | lenet5 | 89.12%" in text and "| cifar10-lenet5-cpu | cifar10 |" in text
    assert (summary.parent / "accuracy_vs_params.png").stat().st_size > 1000


def test_the_zoo_report_refuses_an_unknown_or_empty_set(tmp_path):
    from components.config import ConfigError
    from components.evaluation.zoo_report import build_set_report

    with pytest.raises(ConfigError, match="unknown experiment set 'zoo_gpu'"):
        build_set_report("zoo_gpu", {"experiments": {"a": {"dataset": "cifar10", "model": "lenet5"}}}, root=tmp_path)
    with pytest.raises(EvaluationError, match="p.yaml: the set 'zoo_cpu' has no experiments"):
        build_set_report("zoo_cpu", {"experiments": {"a": {"dataset": "cifar10", "model": "lenet5"}}}, "p.yaml",
                         root=tmp_path)
