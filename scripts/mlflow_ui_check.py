"""Check in a real browser that the MLflow UI shows a finished training: the runs table with
its key metrics, the run's page and its LoggedModel's page.

    .venv/bin/python scripts/mlflow_ui_check.py [--backend-store-uri sqlite:///mlflow.db]
        [--experiment cifar10 | --run-id ID] [--out DIR]

Starts ``mlflow ui`` on 127.0.0.1 at a free port over the store, loads each page in
headless Chromium (the UI is a React single-page app: the DOM is dumped after enough
virtual time for it to fetch and render), checks that the run's name, its accuracy and
its model are on the page, and saves a screenshot of each (``runs.png``, ``run.png``,
``model.png`` in ``--out``, with the DOM dumps beside them). Exit status 0 when every page
shows what it should, 1 when something is missing (each missing text is listed), 2 on bad
input (no such store, run, or no Chromium).
"""
from __future__ import annotations

import argparse
import dataclasses
import html
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# Run as a file (python scripts/mlflow_ui_check.py): the repository's packages are one level up.
REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from components.tracking import views  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# A common desktop size: the runs table then shows every key metric beside the assistant
# panel the UI opens on a first visit.
WINDOW = "1920,1080"
ACCURACY_METRICS = ("test_accuracy", "exported_val_accuracy")  # the one shown: the first the run has


class CheckError(Exception):
    """Bad input: no store, no such run, no browser."""


@dataclasses.dataclass
class Page:
    """A UI page to load and the texts a person should find on it."""

    name: str
    url: str
    expected: list[str]


# ----------------------------------------------------------------------------- what to look for
def ui_number(value: float) -> str:
    """A metric as the UI prints it (JavaScript's shortest form: 1 not 1.0, 0.664062 as is)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def find_run(client, experiment: str | None, run_id: str | None):
    """Run ``run_id``, else the newest finished run with a LoggedModel (in ``experiment`` when named)."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            return client.get_run(run_id)
        except MlflowException as error:
            raise CheckError(f"run {run_id!r}: {error.message}") from None
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise CheckError(f"no experiment {experiment!r} in the store; experiments: "
                             f"{sorted(e.name for e in client.search_experiments())}")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiment_ids, "attributes.status = 'FINISHED'", order_by=["start_time DESC"]):
        if run.outputs and run.outputs.model_outputs:
            return run
    raise CheckError(f"no finished run with a logged model in {experiment or 'any experiment'}; "
                     f"train one first (python -m pipeline.train --experiment NAME)")


def pages_to_check(client, run, base_url: str) -> list[Page]:
    """The runs table, the run's page and its (last) LoggedModel's page, with what each must show."""
    experiment_id, metrics = run.info.experiment_id, run.data.metrics
    accuracy = next((name for name in ACCURACY_METRICS if name in metrics), None)
    if accuracy is None:
        raise CheckError(f"run {run.info.run_id} has no {' or '.join(ACCURACY_METRICS)} metric")
    model = client.get_logged_model(run.outputs.model_outputs[-1].model_id)
    shown_accuracy = ui_number(metrics[accuracy])
    columns = [name for name in views.KEY_METRICS if name in metrics]
    return [
        Page("runs", views.runs_table_url(base_url, experiment_id),
             [run.info.run_name, shown_accuracy, *columns]),
        Page("run", views.run_url(base_url, experiment_id, run.info.run_id),
             [run.info.run_name, run.info.run_id, shown_accuracy, "Finished"]),
        Page("model", views.logged_model_url(base_url, experiment_id, model.model_id),
             [model.name, model.model_id, "Ready", run.info.run_name, accuracy, shown_accuracy]),
    ]


# ----------------------------------------------------------------------------- the server
def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ui(store_uri: str, port: int, log_path: pathlib.Path) -> subprocess.Popen:
    """``mlflow ui`` over ``store_uri`` on 127.0.0.1:``port``, in its own process group, logging to ``log_path``."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(base_url: str, server: subprocess.Popen, log_path: pathlib.Path, timeout_s: float = 90) -> None:
    """Return once ``/health`` answers OK; raise CheckError if the server exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CheckError(f"mlflow ui exited with status {server.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as answer:
                if answer.read().strip() == b"OK":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise CheckError(f"mlflow ui did not answer {base_url}/health within {timeout_s:.0f} s: "
                     f"{log_path.read_text()[-2000:]}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server's process group (uvicorn and its worker): TERM, then KILL after 10 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


# ----------------------------------------------------------------------------- the browser
def chromium(binary: str, url: str, *action: str, budget_ms: int, timeout_s: float = 120) -> str:
    """Run headless Chromium on ``url`` with ``action`` (``--dump-dom``, ``--screenshot=...``) in a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW}",
                   f"--virtual-time-budget={budget_ms}", *action, url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise CheckError(f"chromium exited with status {done.returncode} on {url}: {done.stderr[-1500:]}")
    return done.stdout


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM: scripts and styles dropped, tags removed, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def missing_texts(text: str, expected: list[str]) -> list[str]:
    """The expected texts that ``text`` lacks."""
    return [item for item in expected if item not in text]


def check_page(binary: str, page: Page, out: pathlib.Path, budget_ms: int) -> list[str]:
    """Load ``page``, save its DOM and a screenshot in ``out``; return the expected texts it lacks.

    A page that lacks some is loaded once more with twice the virtual time: on a busy
    machine the app may still be fetching when the first budget runs out.
    """
    for budget in (budget_ms, 2 * budget_ms):
        dom = chromium(binary, page.url, "--dump-dom", f"--screenshot={out / f'{page.name}.png'}", budget_ms=budget)
        (out / f"{page.name}.html").write_text(dom)
        missing = missing_texts(page_text(dom), page.expected)
        if not missing:
            break
    return missing


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend-store-uri", help="the tracking store (default: MLFLOW_TRACKING_URI, else the "
                                                    "project's mlflow.db)")
    parser.add_argument("--experiment", help="MLflow experiment (a data set name) whose newest finished run to show")
    parser.add_argument("--run-id", help="the run to show (default: the newest finished run with a logged model)")
    parser.add_argument("--out", help="folder for the screenshots and DOM dumps (default: a new temporary folder)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--budget-ms", type=int, default=20000, help="virtual time each page gets to render")
    args = parser.parse_args(argv)

    import mlflow

    from components.tracking import TrackingError, configure_tracking

    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="mlflow-ui-check-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        if not os.access(args.chromium, os.X_OK):
            raise CheckError(f"{args.chromium}: no Chromium there (pass --chromium PATH)")
        store_uri = configure_tracking(args.backend_store_uri)
        if store_uri.startswith("http"):
            raise CheckError(f"{store_uri} is a server already: open it in a browser; this check starts its own "
                             f"`mlflow ui` over a store (a sqlite:/// URI)")
        run = find_run(mlflow.MlflowClient(store_uri), args.experiment, args.run_id)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        pages = pages_to_check(mlflow.MlflowClient(store_uri), run, base_url)
        server = start_ui(store_uri, port, out / "mlflow-ui.log")
        try:
            wait_until_up(base_url, server, out / "mlflow-ui.log")
            failures = {page.name: check_page(args.chromium, page, out, args.budget_ms) for page in pages}
        finally:
            stop(server)
    except (CheckError, TrackingError) as error:
        print(f"mlflow_ui_check: error: {error}", file=sys.stderr)
        return 2
    for page in pages:
        status = "ok" if not failures[page.name] else f"MISSING {failures[page.name]}"
        print(f"{page.name:6} {status}\n       {page.url}\n       {out / (page.name + '.png')}")
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
