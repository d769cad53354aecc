"""The MLflow UI shows a finished training: scripts/mlflow_ui_check.py in headless Chromium.

The slow test trains and evaluates a tiny model with the real stages (synthetic CIFAR-10,
one epoch), then runs the check: ``mlflow ui`` over that store, the runs table with the key
metrics, the run's page and the LoggedModel's page, each with the run's name, accuracy and
model on it, and a screenshot of each.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "mlflow_ui_check.py"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


def load_script():
    """scripts/mlflow_ui_check.py as a module (scripts/ is not a package)."""
    if "mlflow_ui_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("mlflow_ui_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["mlflow_ui_check"]


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


# ----------------------------------------------------------------------------- the script's parts
def test_page_text_is_what_a_person_reads():
    check = load_script()
    dom = ("<html><head><style>.a{}</style><script>var hidden = 'tiny';</script></head>"
           "<body><div>Run&nbsp;<b>tiny</b></div>\n<td>0.664062</td></body></html>")
    text = check.page_text(dom)
    assert text == "Run tiny 0.664062" and "hidden" not in text
    assert check.missing_texts(text, ["tiny", "0.664062", "m-123"]) == ["m-123"]


def test_metrics_are_looked_for_as_the_ui_prints_them():
    check = load_script()
    assert check.ui_number(1.0) == "1" and check.ui_number(0.664062) == "0.664062"
    assert check.ui_number(0.707317054271698) == "0.707317054271698" and check.ui_number(3440.7) == "3440.7"


def test_a_run_the_store_does_not_have_is_bad_input(tmp_path):
    result = run_script("--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--run-id", "0" * 32,
                        "--out", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 2 and f"run '{'0' * 32}'" in result.stderr, result.stderr[-2000:]


# ----------------------------------------------------------------------------- the browser check
def tiny_project(root: pathlib.Path) -> pathlib.Path:
    """Synthetic CIFAR-10 prepared by the real prepare stage, and params for a one-epoch LeNet-5."""
    from tests.conftest import prepare_synthetic

    prepare_synthetic(root / "data" / "cifar10", 640, 128, {"train": 2, "validation": 1, "test": 1})
    params = {
        "prepare": {"out_root": str(root / "data")},
        "train": {"models_dir": str(root / "models"), "checkpoints_dir": str(root / "checkpoints"),
                  "input": {"shuffle_buffer": 1000}},
        "recipes": {"quick": {"optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
                              "schedule": {"name": "cosine"}, "epochs": 1, "batch_size": 32}},
        "experiments": {"tiny": {"dataset": "cifar10", "model": "lenet5", "recipe": "quick",
                                 "model_hparams": {"activation": "relu"}}},
        "evaluate": {"batch_size": 64, "throughput_batches": 2, "latency_runs": 3, "warmup_runs": 1},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "thresholds.yaml").write_text("version: 1\ndefaults: {max_drop: 0.01}\n"
                                          "min_accuracy:\n  cifar10: {lenet5: 0.0}\n")
    return root / "params.yaml"


def run_stage(stage: str, params: pathlib.Path, store_uri: str) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_TRACKING_URI": store_uri}
    done = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", "--experiment", "tiny", "--params",
                           str(params)], cwd=params.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{stage}: {done.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (/usr/bin/chromium) to load the MLflow UI in")
def test_the_ui_shows_the_run_its_accuracy_and_its_model(tmp_path):
    import json

    from PIL import Image

    params = tiny_project(tmp_path / "project")
    store_uri = f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    run_stage("train", params, store_uri)
    run_stage("evaluate", params, store_uri)
    train = json.loads((tmp_path / "project" / "models" / "tiny" / "train_metrics.json").read_text())

    out = tmp_path / "ui"
    result = run_script("--backend-store-uri", store_uri, "--experiment", "cifar10", "--out", str(out),
                        "--chromium", CHROMIUM)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in ("runs", "run", "model"):
        assert f"{page:6} ok" in result.stdout
        with Image.open(out / f"{page}.png") as image:
            assert image.format == "PNG" and image.size == (1920, 1080)
    check = load_script()
    model_page = check.page_text((out / "model.html").read_text())
    assert train["mlflow_model_id"] in model_page and "cifar10-test" in model_page  # test metrics' data set
    runs_page = check.page_text((out / "runs.html").read_text())
    assert all(name in runs_page for name in ("test_accuracy", "exported_val_accuracy", "train_time_s"))
