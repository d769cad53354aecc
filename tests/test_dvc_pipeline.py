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

from components.data.info import INFO_FILE
from components.experiments import EXPERIMENT_SETS, catalogue
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
    for experiments_set in EXPERIMENT_SETS:  # results of real runs: start clean
        for name in ("metrics", "plots", "reports", "models", "dvc.lock"):
            path = copy / experiments_set.root / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["prepare"].update(source="synthetic", direct_running_mode="in_memory", direct_num_workers=1,
                             num_shards={"train": 2, "validation": 1, "test": 1},
                             synthetic={"train_examples": 320, "test_examples": 96, "seed": 0})
    params["train"]["input"] = {"shuffle_buffer": 500}
    for experiment in params["experiments"].values():
        experiment["overrides"] = {**experiment.get("overrides", {}), "epochs": 1, "batch_size": 32}
    for experiment in params["zoo_cpu"].values():
        experiment["overrides"] = {"steps": 3, "batch_size": 32}
    params["evaluate"].update(warn_only=True, latency_runs=3, throughput_batches=1, warmup_runs=1)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=copy)
    # The raw folders are DVC-tracked (data/raw/<dataset>.dvc): track the synthetic stand-ins
    # instead, as a user would, so that `dvc push` / `dvc pull` carry them too.
    for dataset in params["prepare"]["datasets"]:
        (copy / "data" / "raw" / f"{dataset}.dvc").unlink(missing_ok=True)
        (copy / "data" / "raw" / dataset).mkdir(parents=True)
        (copy / "data" / "raw" / dataset / "SYNTHETIC").write_text("prepare.source is synthetic in this test\n")
        sh("dvc", "add", "-q", f"data/raw/{dataset}", cwd=copy)
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
        assert (repo_copy / "data" / "tfrecords" / dataset / INFO_FILE).exists()
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
    assert "zoo" not in first.stdout + second.stdout  # `dvc repro` runs the default experiments only
    # Bytecode caches beside the sources the stages depend on change nothing (.dvcignore):
    # Python writes them wherever PYTHONDONTWRITEBYTECODE is not set.
    sh(sys.executable, "-m", "compileall", "-q", "components", "pipeline", cwd=repo_copy)
    assert list((repo_copy / "components" / "data").glob("__pycache__/*.pyc"))
    assert "Data and pipelines are up to date" in sh("dvc", "status", "dvc.yaml", cwd=repo_copy).stdout
    assert not (repo_copy / "zoo" / "cpu" / "dvc.lock").exists()


def test_one_zoo_experiment_runs_alone_under_dvc_beside_the_defaults(repo_copy):
    """`dvc repro zoo/cpu/dvc.yaml:evaluate@X` trains and evaluates X (and what it needs), caches
    and locks it in zoo/cpu/, and `dvc metrics show` / `dvc exp show` list it beside the defaults."""
    sh("dvc", "repro", cwd=repo_copy)  # the defaults up to date whatever ran before
    name = "cifar10-lenet5-cpu"
    target = f"zoo/cpu/dvc.yaml:evaluate@{name}"
    result = sh("dvc", "repro", target, cwd=repo_copy)
    ran = sorted(line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage"))
    assert ran == [target, f"zoo/cpu/dvc.yaml:train@{name}"]
    ref = catalogue(yaml.safe_load((repo_copy / "params.yaml").read_text()), root=repo_copy)[name]
    assert ref.paths.model == repo_copy / "zoo" / "cpu" / "models" / name / "model.keras" and ref.paths.model.exists()
    metrics = json.loads(ref.paths.test_metrics.read_text())
    assert metrics["experiment"] == name and json.loads(ref.paths.train_metrics.read_text())["steps_per_epoch"] == 3
    lock = yaml.safe_load((repo_copy / "zoo" / "cpu" / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == [f"evaluate@{name}", f"train@{name}"]
    assert f"zoo/cpu/models/{name}" in [out["path"] for out in lock[f"train@{name}"]["outs"]]
    shown = json.dumps(json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo_copy).stdout))
    assert f"zoo/cpu/metrics/{name}/test.json" in shown and "metrics/fashion_mnist-airbench_small/test.json" in shown
    sh("git", "add", "-A", cwd=repo_copy)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "zoo run", cwd=repo_copy)
    table = sh("dvc", "exp", "show", "--no-pager", "--md", "--only-changed", cwd=repo_copy).stdout + \
        json.dumps(json.loads(sh("dvc", "exp", "show", "--json", cwd=repo_copy).stdout))
    assert f"zoo/cpu/metrics/{name}/test.json" in table and "metrics/cifar10-airbench/test.json" in table
    again = sh("dvc", "repro", target, cwd=repo_copy)
    assert "Running stage" not in again.stdout


def test_changing_one_experiment_reruns_only_its_stages(repo_copy):
    sh("dvc", "repro", cwd=repo_copy)  # up to date whatever ran before
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    changed = "fashion_mnist-airbench_small"
    params["experiments"][changed]["overrides"]["epochs"] = 2
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = sh("dvc", "repro", cwd=repo_copy)
    ran = sorted(line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage"))
    assert ran == sorted([f"train@{changed}", f"evaluate@{changed}", "report"])
    history = (repo_copy / "models" / changed / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs


def tree_bytes(root: pathlib.Path, relative: str) -> dict[str, bytes]:
    """Every file under ``root/relative`` (or that one file), keyed by its path relative to ``root``."""
    top = root / relative
    files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def dvc_outputs(root: pathlib.Path) -> list[str]:
    """The paths DVC keeps in its cache: every cached ``outs`` of dvc.lock and of the ``.dvc`` files."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    paths = [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    for dvc_file in root.glob("data/raw/*.dvc"):
        paths += [str(dvc_file.parent.relative_to(root) / out["path"])
                  for out in yaml.safe_load(dvc_file.read_text())["outs"]]
    return sorted(paths)


def commit_all(repo: pathlib.Path, message: str) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message, "--allow-empty", cwd=repo)


def test_push_then_pull_on_a_fresh_clone_restores_every_output(repo_copy, tmp_path):
    sh("dvc", "repro", cwd=repo_copy)  # up to date whatever ran before
    sh("dvc", "repro", "zoo/cpu/dvc.yaml:evaluate@cifar10-lenet5-cpu", cwd=repo_copy)  # one zoo experiment run
    remote = tmp_path / "remote"
    sh("dvc", "remote", "modify", "local", "url", str(remote), cwd=repo_copy)  # committed: the clone uses it
    commit_all(repo_copy, "results")
    pushed = sh("dvc", "push", cwd=repo_copy)
    assert "pushed" in pushed.stdout, pushed.stdout

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo_copy), str(clone), cwd=tmp_path)
    # What `make pull` fetches: everything that has been run (the zoo stages never run have no
    # hash to pull; a bare `dvc pull` exits 1 for them).
    targets = sh("make", "-s", "pull-targets", f"PY={sys.executable}", cwd=clone).stdout.split()
    assert "dvc.yaml" in targets and "zoo/cpu/dvc.yaml:train@cifar10-lenet5-cpu" in targets
    assert not any("paper" in target for target in targets)
    sh("dvc", "pull", *targets, cwd=clone)
    outputs = dvc_outputs(repo_copy)
    assert any(p.startswith("models/") for p in outputs) and any(p.startswith("data/tfrecords/") for p in outputs)
    assert any(p.startswith("data/raw/") for p in outputs)
    for path in outputs:
        original, restored = tree_bytes(repo_copy, path), tree_bytes(clone, path)
        assert original and restored.keys() == original.keys(), path
        assert all(restored[name] == original[name] for name in original), f"{path}: bytes differ after pull"

    status = sh("dvc", "status", *targets, cwd=clone)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    zoo_model = clone / "zoo" / "cpu" / "models" / "cifar10-lenet5-cpu" / "model.keras"
    assert zoo_model.read_bytes() == (repo_copy / zoo_model.relative_to(clone)).read_bytes()
    diff = sh("dvc", "metrics", "diff", cwd=clone)
    assert "WARNING" not in diff.stdout + diff.stderr and "ERROR" not in diff.stdout + diff.stderr, diff.stderr
    repro = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in repro.stdout, repro.stdout


def wait_for_queue(repo: pathlib.Path, timeout_s: float = 900) -> str:
    """Poll ``dvc queue status`` until nothing is queued or running; returns the last status table."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        table = sh("dvc", "queue", "status", cwd=repo).stdout
        if not any(word in table for word in ("Queued", "Running")):
            return table
        if time.monotonic() > deadline:
            raise AssertionError(f"the DVC queue did not finish in {timeout_s} s:\n{table}")
        time.sleep(5)


def test_queued_experiments_run_two_at_once_into_the_projects_mlflow_store(repo_copy):
    import sqlite3

    import mlflow

    sh("dvc", "repro", cwd=repo_copy)
    commit_all(repo_copy, "baseline for the queue")
    store = f"sqlite:///{repo_copy / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)

    def runs_of(experiment: str) -> list:
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id]) if found else []

    before = {name: len(runs_of(name)) for name in ("fashion_mnist", "cifar10")}
    # Params no earlier test ran: DVC's run cache would restore those outputs without training.
    queued = {"q-small-e3": "experiments.fashion_mnist-airbench_small.overrides.epochs=3",
              "q-airbench-e2": "experiments.cifar10-airbench.overrides.epochs=2"}
    for name, override in queued.items():
        sh("dvc", "exp", "run", "--queue", "-n", name, "-S", override, cwd=repo_copy)
    sh("dvc", "queue", "start", "-j", "2", cwd=repo_copy)
    table = wait_for_queue(repo_copy)
    assert table.count("Success") >= 2 and "Failed" not in table, table

    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo_copy).stdout)
    experiments = {rev["name"]: rev for commit in shown for experiment in (commit.get("experiments") or [])
                   for rev in experiment["revs"]}
    assert set(queued) <= set(experiments), sorted(experiments)
    for name in queued:
        metrics = json.dumps(experiments[name]["data"]["metrics"])
        assert '"accuracy"' in metrics and '"best_val_accuracy"' in metrics, (name, metrics[:500])

    # Both MLflow runs are in the project's store (not in the executors' temporary copies),
    # the store is intact, and each run records which DVC experiment made it.
    after = {name: runs_of(name) for name in ("fashion_mnist", "cifar10")}
    assert len(after["fashion_mnist"]) == before["fashion_mnist"] + 1
    assert len(after["cifar10"]) == before["cifar10"] + 1
    tagged = {run.data.tags.get("dvc_experiment") for runs in after.values() for run in runs}
    assert set(queued) <= tagged, tagged
    assert all(run.info.status == "FINISHED" for runs in after.values() for run in runs)
    with sqlite3.connect(repo_copy / "mlflow.db") as database:
        assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not list((repo_copy / ".dvc" / "tmp").rglob("mlflow.db"))
