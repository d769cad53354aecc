"""`dvc repro` end to end in a temporary copy of the repository, on small synthetic data."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from components.experiments import catalogue
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def sh(*command: str, cwd: pathlib.Path, check: bool = True) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}",
                   "TF_CPP_MIN_LOG_LEVEL": "3", "DVC_NO_ANALYTICS": "1"}
    environment.pop("MLFLOW_TRACKING_URI", None)  # the copy's own SQLite store
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment, timeout=1200)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def make_repo_copy(copy: pathlib.Path) -> pathlib.Path:
    """The working tree (tracked and untracked-but-not-ignored files) as a fresh git repo at ``copy``,
    on small synthetic data: every stage runs in seconds."""
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split("\n")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    for name in ("metrics", "plots", "reports", "dvc.lock"):  # results of real runs: start clean
        shutil.rmtree(copy / name, ignore_errors=True) if (copy / name).is_dir() else (copy / name).unlink(missing_ok=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["prepare"].update(source="synthetic", direct_running_mode="in_memory", direct_num_workers=1,
                             num_shards={"train": 2, "validation": 1, "test": 1},
                             synthetic={"train_examples": 320, "test_examples": 96, "seed": 0})
    params["train"]["input"] = {"shuffle_buffer": 500}
    for experiment in params["experiments"].values():
        experiment["overrides"] = {**experiment.get("overrides", {}), "epochs": 1, "batch_size": 32}
    params["evaluate"].update(warn_only=True, latency_runs=3, throughput_batches=1, warmup_runs=1)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for dataset in params["prepare"]["datasets"]:
        (copy / "data" / "raw" / dataset).mkdir(parents=True)
        (copy / "data" / "raw" / dataset / "SYNTHETIC").write_text("prepare.source is synthetic in this test\n")
    sh("git", "init", "-q", cwd=copy)
    sh("git", "add", "-A", cwd=copy)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy", cwd=copy)
    return copy


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> pathlib.Path:
    return make_repo_copy(tmp_path_factory.mktemp("repo"))


def test_repro_runs_every_stage_then_nothing(repo_copy):
    first = sh("dvc", "repro", cwd=repo_copy)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    experiments = params["experiments"]
    for dataset in params["prepare"]["datasets"]:
        assert (repo_copy / "data" / "tfrecords" / dataset / "dataset_info.json").exists()
    for name, ref in catalogue(params, root=repo_copy).items():
        if ref.section != "experiments":
            continue
        assert f"Running stage 'train@{name}'" in first.stdout
        assert ref.paths.model.exists()
        assert json.loads(ref.paths.train_metrics.read_bytes()) == json.loads(ref.paths.train_summary.read_bytes())
        assert ref.paths.history.read_bytes() == ref.paths.model_history.read_bytes()
        metrics = json.loads(ref.paths.test_metrics.read_text())
        assert metrics["experiment"] == name and 0 <= metrics["accuracy"] <= 1
        assert json.loads(ref.paths.verdict.read_text())["status"] in ("accepted", "rejected")
        assert ref.paths.confusion_json.exists() and ref.paths.accepted.exists()
    assert (repo_copy / "reports" / "summary.md").read_text().count("|") > 10

    # Every experiment's metrics and plots, declared by dvc.yaml's templates.
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo_copy).stdout)
    text = json.dumps(shown)
    for name in experiments:
        assert f"metrics/{name}/train.json" in text and f"metrics/{name}/test.json" in text
    assert '"accuracy"' in text and '"best_val_accuracy"' in text
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo_copy).stdout)
    for name in experiments:
        assert f"plots/{name}/history.csv" in json.dumps(plots) and f"plots/{name}/confusion.json" in json.dumps(plots)

    second = sh("dvc", "repro", cwd=repo_copy)
    assert "Running stage" not in second.stdout
    assert "up to date" in second.stdout


def test_changing_one_experiment_reruns_only_its_stages(repo_copy):
    sh("dvc", "repro", cwd=repo_copy)  # up to date whatever ran before
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    changed = "fashion_mnist-lenet5"
    params["experiments"][changed]["overrides"]["epochs"] = 2
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = sh("dvc", "repro", cwd=repo_copy)
    ran = sorted(line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage"))
    assert ran == sorted([f"train@{changed}", f"evaluate@{changed}", "report"])
    history = (repo_copy / "models" / changed / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
