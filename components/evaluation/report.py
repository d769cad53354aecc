"""The comparison report: every evaluated experiment beside the tutorials' and the papers' figures.

:func:`build_report` reads ``metrics/<experiment>/test.json`` (one per evaluated
experiment; ``verdict.json`` beside it gives the status), adds training time and
images/s from the train stage's ``train.json`` beside it when present, and, when a tracking
store is reachable, the run's duration where the file lacks it and whether the model
version holds the ``champion`` alias. It writes ``reports/summary.md`` and two charts:
accuracy against parameters and against training time.

Only the metrics files are required; every other source is optional and its absence is
noted, never fatal. No timestamps in the output, so an unchanged input gives an
unchanged report.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Callable, Sequence

from components.evaluation.errors import EvaluationError
from components.evaluation.io import read_json, write_text_atomic
from components.evaluation.references import SEED_CIFAR10_TABLE, Figure, reference_for
from components.experiments import METRICS_ROOT, TEST_METRICS_FILE, TRAIN_METRICS_FILE, VERDICT_FILE

Log = Callable[[str], None]
SUMMARY_FILE = "summary.md"
PARAMS_CHART = "accuracy_vs_params.png"
TIME_CHART = "accuracy_vs_train_time.png"


@dataclasses.dataclass
class Row:
    """One experiment's line in the report."""

    experiment: str
    dataset: str
    model: str
    accuracy: float
    params: int | None = None
    status: str | None = None  # accepted / rejected, from the verdict file
    train_time_s: float | None = None
    train_images_per_s: float | None = None
    train_epochs: int | None = None
    train_precision: str | None = None  # the Keras dtype policy it trained under
    train_device: str | None = None  # CPU or GPU
    infer_images_per_s: float | None = None
    latency_ms: float | None = None
    mlflow_run_id: str | None = None
    registered_model_name: str | None = None
    registered_model_version: str | None = None
    champion: bool | None = None  # whether this version holds the champion alias (None: unknown)
    tutorial: Figure | None = None
    paper: Figure | None = None


def metrics_files(metrics_root: str | os.PathLike) -> list[pathlib.Path]:
    """Every evaluated experiment's test metrics, ``metrics/<experiment>/test.json``."""
    root = pathlib.Path(metrics_root)
    return sorted(root.glob(f"*/{TEST_METRICS_FILE}"))


def _number(data: dict, key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_row(path: pathlib.Path, log: Log = print) -> Row:
    """The report row for one metrics file (plus its verdict and the train stage's summary when present)."""
    data = read_json(path, "evaluation metrics written by `python -m pipeline.evaluate`")
    accuracy = _number(data, "accuracy") if isinstance(data, dict) else None
    if not isinstance(data, dict) or accuracy is None or not isinstance(data.get("experiment"), str):
        raise EvaluationError(f"{path}: expected a JSON object with a string 'experiment' and a numeric 'accuracy' "
                              f"(as `python -m pipeline.evaluate` writes); re-run the evaluate stage")
    if data["experiment"] != path.parent.name:
        raise EvaluationError(f"{path}: holds experiment '{data['experiment']}', but its directory names "
                              f"'{path.parent.name}'; re-run `python -m pipeline.evaluate --experiment {path.parent.name}`")
    dataset, model = data.get("dataset", "?"), data.get("model", "?")
    reference = reference_for(dataset, model)
    params = _number(data, "params")
    row = Row(experiment=data["experiment"], dataset=dataset, model=model, accuracy=accuracy,
              params=int(params) if params is not None else None,
              infer_images_per_s=_number(data, "images_per_s"), latency_ms=_number(data, "latency_ms"),
              tutorial=reference.tutorial, paper=reference.paper)
    verdict_path = path.with_name(VERDICT_FILE)
    if verdict_path.exists():
        verdict = read_json(verdict_path, "the verdict written by `python -m pipeline.evaluate`")
        if isinstance(verdict, dict):
            row.status = verdict.get("status")
    train_path = path.with_name(TRAIN_METRICS_FILE)
    if train_path.exists():
        try:
            train = read_json(train_path, "the train stage's summary")
        except EvaluationError as error:  # optional source: note it, keep going
            log(f"note: {error}; training figures left out")
            train = {}
        if isinstance(train, dict):
            row.train_time_s = _number(train, "train_time_s")
            row.train_images_per_s = _number(train, "images_per_s")
            epochs = _number(train, "epochs")
            row.train_epochs = int(epochs) if epochs is not None else None
            row.train_precision = train.get("precision") or None
            row.train_device = train.get("device") or None
            row.mlflow_run_id = train.get("mlflow_run_id") or None
            row.registered_model_name = train.get("registered_model_name") or row.experiment
            version = train.get("registered_model_version")
            row.registered_model_version = None if version in (None, "") else str(version)
    return row


def collect_rows(metrics_root: str | os.PathLike = METRICS_ROOT, log: Log = print) -> list[Row]:
    """Every experiment's row, sorted by data set then accuracy (best first)."""
    files = metrics_files(metrics_root)
    if not files:
        raise EvaluationError(f"{metrics_root}: no metrics files (<experiment>/{TEST_METRICS_FILE}); run the evaluate stage "
                              f"first (`dvc repro` or `python -m pipeline.evaluate --experiment NAME`)")
    rows = [read_row(path, log) for path in files]
    return sorted(rows, key=lambda r: (r.dataset, -r.accuracy, r.experiment))


def add_mlflow(rows: Sequence[Row], tracking_uri: str | None, log: Log = print) -> bool:
    """Fill gaps from MLflow when the store answers: run duration as training time, champion alias.

    Returns whether the store was used. A store that is unreachable or not usable
    (``TrackingError``) is a note, not a failure: the report never depends on a tracking
    server being up. A run or model the store does not have leaves that row's figure out.
    Anything else (a bug, a store that fails mid-way) propagates.
    """
    from components.tracking import TrackingError, configure_tracking
    from components.tracking.lookups import alias_version, run_duration_s

    try:
        configure_tracking(tracking_uri)
    except TrackingError as error:
        log(f"note: MLflow not used for the report ({str(error).splitlines()[0][:300]})")
        return False
    for row in rows:
        if row.mlflow_run_id and row.train_time_s is None:
            row.train_time_s = run_duration_s(row.mlflow_run_id)
        if row.registered_model_name and row.registered_model_version:
            row.champion = alias_version(row.registered_model_name) == row.registered_model_version
    return True


# ----------------------------------------------------------------------------- rendering
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _figure(figure: Figure | None) -> str:
    return "-" if figure is None else figure.text


def render_markdown(rows: Sequence[Row], charts: Sequence[tuple[str, str]] = (), mlflow_used: bool = False) -> str:
    """``reports/summary.md``: the comparison table, reference sources, and the charts (title, file)."""
    lines = [
        "# Results",
        "",
        "Test-split top-1 accuracy of every evaluated experiment, beside the seed tutorial's figure and",
        "the paper's (or best-known reproduction's) figure for the same model and data set",
        "(`components/evaluation/references.py`, from `../shared/REFERENCES.md`). The references train",
        "for 20k steps to 300 epochs on GPUs; ours for a CPU budget, so read them as targets, not peers.",
        "",
        "Built by `python -m pipeline.report` from `metrics/<experiment>/test.json`, `verdict.json` and",
        "`train.json`" + (" and the MLflow runs." if mlflow_used else "; MLflow was not reachable or not configured."),
        "",
        "| experiment | data set | model | accuracy | tutorial | paper | params | training time "
        "| train images/s | inference images/s | latency (ms) | verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        verdict = row.status or "-"
        if row.champion:
            verdict += " (champion)"
        latency = "-" if row.latency_ms is None else f"{row.latency_ms:.2f}"
        lines.append(
            f"| {row.experiment} | {row.dataset} | {row.model} | {_pct(row.accuracy)} | {_figure(row.tutorial)} "
            f"| {_figure(row.paper)} | {_count(row.params)} | {_duration(row.train_time_s)} "
            f"| {_rate(row.train_images_per_s)} | {_rate(row.infer_images_per_s)} | {latency} | {verdict} |")
    sources = [(row, kind, figure) for row in rows
               for kind, figure in (("tutorial", row.tutorial), ("paper", row.paper)) if figure is not None]
    if sources:
        lines += ["", "Reference sources:", ""]
        lines += [f"- {row.dataset}/{row.model}, {kind} {figure.text}: {figure.source}" for row, kind, figure in sources]
    lines += ["", "Columns: training time and train images/s from the train stage; inference images/s at the",
              "evaluate stage's batch size after warm-up, latency the median at batch 1 (this machine, CPU)."]
    for title, file in charts:
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    return "\n".join(lines) + "\n"


def render_seed_comparison(rows: Sequence[Row]) -> list[str]:
    """Markdown lines: the seed tutorials' CIFAR-10 table (:data:`SEED_CIFAR10_TABLE`) with
    ``rows`` beneath it, each with its parameters and what its training cost."""
    lines = ["", "## Against the seed tutorials' CIFAR-10 table", "",
             "Seed 000 trained each model 20k steps of 64 (25.6 epochs of CIFAR-10) on a GPU. Our runs",
             "below it trained on this machine's device, in the time shown (the train stage's own clock).", "",
             "| run | model | data set | test accuracy | params | training | precision | device |",
             "| --- | --- | --- | ---: | ---: | --- | --- | --- |"]
    lines += [f"| seed 000 | {name} | cifar10 | {figure.text} | - | 20k steps of 64 | - | GPU |"
              for name, figure in SEED_CIFAR10_TABLE]
    for row in rows:
        epochs = "-" if row.train_epochs is None else f"{row.train_epochs} epochs"
        lines.append(f"| {row.experiment} | {row.model} | {row.dataset} | {_pct(row.accuracy)} | {_count(row.params)} "
                     f"| {epochs}, {_duration(row.train_time_s)} | {row.train_precision or '-'} "
                     f"| {row.train_device or '-'} |")
    return lines


def plot_accuracy_against(rows: Sequence[Row], attribute: str, xlabel: str, path: pathlib.Path, title: str,
                          show_paper: bool = True) -> None:
    """Scatter of accuracy (%) against ``attribute`` of each row (log x), one colour per data set.

    With ``show_paper``, where the paper's figure is known a hollow marker at the same x
    shows it, joined to ours by a dotted line: the gap to close. (Only meaningful where
    x is a property of the model, like parameters; not for our training time.)
    """
    from components.evaluation.plots import _new_figure, save_figure

    figure = _new_figure(7.5, 5.0)
    axes = figure.add_subplot()
    points = [r for r in rows if getattr(r, attribute) is not None and getattr(r, attribute) > 0]
    colours: dict[str, str] = {}
    for row in points:
        first = row.dataset not in colours  # label each data set once in the legend
        colour = colours.setdefault(row.dataset, f"C{len(colours)}")
        x = getattr(row, attribute)
        axes.scatter([x], [row.accuracy * 100], color=colour, zorder=3, label=row.dataset if first else None)
        axes.annotate(row.model, (x, row.accuracy * 100), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if show_paper and row.paper is not None and row.paper.accuracy is not None:
            axes.scatter([x], [row.paper.accuracy * 100], facecolors="none", edgecolors=colour, zorder=3)
            axes.plot([x, x], [row.accuracy * 100, row.paper.accuracy * 100], ":", color=colour, linewidth=1)
    if points:
        axes.set_xscale("log")
        axes.margins(x=0.15, y=0.08)  # room for the model names beside the points
        if show_paper and any(r.paper is not None and r.paper.accuracy is not None for r in points):
            axes.scatter([], [], facecolors="none", edgecolors="grey", label="paper figure")
        axes.legend(loc="best", fontsize=8)
    else:
        axes.text(0.5, 0.5, f"no experiment has {xlabel.lower()} recorded", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    save_figure(figure, path)


def build_report(metrics_root: str | os.PathLike = METRICS_ROOT, out_dir: str | os.PathLike = "reports", *,
                 use_mlflow: bool = True,
                 tracking_uri: str | None = None, log: Log = print) -> pathlib.Path:
    """Write ``<out_dir>/summary.md`` and its two charts; returns the summary's path.

    ``use_mlflow``: consult the tracking store (``tracking_uri``, else
    ``MLFLOW_TRACKING_URI``, else the local ``mlflow.db`` if that file exists).
    """
    rows = collect_rows(metrics_root, log)
    mlflow_used = False
    if use_mlflow and _tracking_configured(tracking_uri):
        mlflow_used = add_mlflow(rows, tracking_uri, log)
    out = pathlib.Path(out_dir)
    charts = [("Accuracy against parameters", PARAMS_CHART, "params", "parameters", True),
              ("Accuracy against training time", TIME_CHART, "train_time_s", "training time (s)", False)]
    for title, file, attribute, xlabel, show_paper in charts:
        plot_accuracy_against(rows, attribute, xlabel, out / file, title, show_paper)
    summary = out / SUMMARY_FILE
    text = render_markdown(rows, [(c[0], c[1]) for c in charts], mlflow_used)
    write_text_atomic(summary, text + "\n".join(render_seed_comparison(rows)) + "\n")
    return summary


def _tracking_configured(uri: str | None) -> bool:
    """Whether a store was named, or the default local one exists (never create an empty mlflow.db)."""
    from components.tracking.store import project_root

    return bool(uri or os.environ.get("MLFLOW_TRACKING_URI") or (project_root() / "mlflow.db").exists())
