"""The report of an experiment set of the zoo (``zoo`` or ``zoo_cpu``): one line per model.

:func:`build_set_report` writes ``<set root>/reports/summary.md`` (``zoo/cpu/reports/...``):

* the zoo table: every experiment of the set, in params order, with the model's family,
  parameters and multiply-adds per image, its training budget (from the recipe and
  overrides), the images it was trained on (from the train stage's ``train.json``), train
  images/s, test accuracy, the floor it was judged against and the verdict (from
  ``verdict.json``), beside the seed tutorial's and the paper's figures. An experiment not
  evaluated yet keeps its line, marked "not run yet": a set built over several sittings shows
  what is left;
* the usual comparison table and charts (:mod:`components.evaluation.report`) of the set's
  evaluated experiments beside the default ones (``metrics/``).

Parameters and MACs come from building each model (``components.models.summary``), as
``python -m pipeline.models`` prints them, at the data set's image shape.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping, Sequence

from components.evaluation.errors import EvaluationError
from components.evaluation.io import read_json, write_text_atomic
from components.evaluation.references import reference_for
from components.evaluation.report import (PARAMS_CHART, SUMMARY_FILE, TIME_CHART, Log, Row, _count, _duration,
                                          _figure, _pct, _rate, _tracking_configured, add_mlflow, metrics_files,
                                          plot_accuracy_against, read_row, render_markdown)
from components.experiments import METRICS_ROOT, catalogue, experiment_set

REPORTS_DIR = "reports"  # under the set's root


@dataclasses.dataclass
class ZooLine:
    """One experiment's line of the zoo table; ``result`` is None until it has been evaluated."""

    experiment: str
    dataset: str
    model: str
    family: str
    params: int
    macs: int
    budget: str  # "5 epochs of 128", "64 steps of 32"
    result: Row | None = None
    images_seen: int | None = None
    floor: float | None = None


def budget_text(recipe) -> str:
    """The training budget a resolved recipe sets, in its own unit (epochs or steps) and batch."""
    if recipe.steps:
        return f"{recipe.steps:,} steps of {recipe.batch_size}"
    return f"{recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''} of {recipe.batch_size}"


def images_seen(train: Mapping[str, Any], batch_size: int) -> int | None:
    """Training images the train stage stepped through: epochs x steps per epoch x batch."""
    epochs, steps = train.get("epochs"), train.get("steps_per_epoch")
    if not isinstance(epochs, int) or not isinstance(steps, int):
        return None
    return epochs * steps * batch_size


def zoo_lines(section: str, params: Mapping[str, Any], where: str = "params.yaml", log: Log = print,
              root: str | pathlib.Path = ".") -> list[ZooLine]:
    """Every experiment of set ``section`` with its model's size, budget and (when evaluated) results."""
    from components.data import get_dataset
    from components.models import create_model, model_info
    from components.models.summary import describe
    from components.training.config import resolve_experiment

    refs = [ref for ref in catalogue(params, where, root).values() if ref.section == section]
    if not refs:
        raise EvaluationError(f"{where}: the set '{section}' has no experiments")
    sizes: dict[tuple, tuple[int, int]] = {}
    lines = []
    for ref in refs:
        experiment = resolve_experiment(ref.name, dict(params), where)
        spec = get_dataset(experiment.dataset)
        key = (experiment.model, spec.image_shape, spec.num_classes, tuple(sorted(experiment.model_hparams.items())))
        if key not in sizes:
            import keras

            model = create_model(experiment.model, spec.image_shape, spec.num_classes, **experiment.model_hparams)
            described = describe(model, experiment.model)
            sizes[key] = (described.params, described.macs)
            del model
            keras.backend.clear_session()  # keep memory flat over 30 models
        line = ZooLine(ref.name, experiment.dataset, experiment.model, model_info(experiment.model).family,
                       *sizes[key], budget_text(experiment.recipe))
        if ref.paths.test_metrics.exists():
            line.result = read_row(ref.paths.test_metrics, log)
            if ref.paths.train_metrics.exists():
                line.images_seen = images_seen(read_json(ref.paths.train_metrics, "the train stage's summary"),
                                               experiment.recipe.batch_size)
            if ref.paths.verdict.exists():
                verdict = read_json(ref.paths.verdict, "the verdict written by `python -m pipeline.evaluate`")
                floors = [c.get("threshold") for c in verdict.get("checked", []) if c.get("check") == "min_accuracy"]
                line.floor = floors[0] if floors and isinstance(floors[0], (int, float)) else None
        lines.append(line)
    return lines


def render_zoo_table(section: str, lines: Sequence[ZooLine]) -> list[str]:
    """The zoo table as Markdown lines, with a count of what is evaluated and accepted."""
    done = [line for line in lines if line.result is not None]
    accepted = [line for line in done if line.result.status == "accepted"]
    total_s = sum(line.result.train_time_s or 0.0 for line in done)
    out = [f"## The `{section}` set: {len(done)} of {len(lines)} experiments evaluated, {len(accepted)} accepted",
           "",
           f"Training time of the evaluated ones together: {_duration(total_s) if done else '-'}.",
           "",
           "| experiment | model | family | params | MACs/image | budget | images seen | train images/s "
           "| training time | accuracy | floor | verdict | tutorial | paper |",
           "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for line in lines:
        reference = reference_for(line.dataset, line.model)
        row = line.result
        measured = ("not run yet", "-", "-", "-", "-", "-") if row is None else (
            f"{line.images_seen:,}" if line.images_seen else "-", _rate(row.train_images_per_s),
            _duration(row.train_time_s), _pct(row.accuracy), _pct(line.floor), row.status or "-")
        out.append(f"| {line.experiment} | {line.model} | {line.family} | {_count(line.params)} | {_count(line.macs)} "
                   f"| {line.budget} | " + " | ".join(measured)
                   + f" | {_figure(reference.tutorial)} | {_figure(reference.paper)} |")
    return out


def build_set_report(section: str, params: Mapping[str, Any], where: str = "params.yaml", *, use_mlflow: bool = True,
                     tracking_uri: str | None = None, root: str | pathlib.Path = ".", log: Log = print) -> pathlib.Path:
    """Write the report of set ``section`` under its root; returns the summary's path."""
    experiments_set = experiment_set(section)
    lines = zoo_lines(section, params, where, log, root)
    defaults = pathlib.Path(root) / METRICS_ROOT
    rows = [line.result for line in lines if line.result is not None]
    rows += [read_row(path, log) for path in metrics_files(defaults)]
    rows.sort(key=lambda r: (r.dataset, -r.accuracy, r.experiment))
    mlflow_used = bool(rows) and use_mlflow and _tracking_configured(tracking_uri) and add_mlflow(rows, tracking_uri, log)
    out = pathlib.Path(root) / experiments_set.root / REPORTS_DIR
    charts = [("Accuracy against parameters", PARAMS_CHART, "params", "parameters", True),
              ("Accuracy against training time", TIME_CHART, "train_time_s", "training time (s)", False)]
    for title, file, attribute, xlabel, show_paper in charts:
        plot_accuracy_against(rows, attribute, xlabel, out / file, title, show_paper)
    text = [f"# The zoo: {experiments_set.description}", "",
            f"Built by `python -m pipeline.zoo_report --set {section}` from `{experiments_set.root}/metrics/` and "
            f"params.yaml `{section}` (budgets: the recipe and its overrides).", ""]
    text += render_zoo_table(section, lines)
    text += ["", "Budget: the training images the recipe allows (`params.yaml`, the comment above `zoo_cpu`); images "
             "seen = epochs x steps per epoch x batch, as trained. Floor: the `min_accuracy` the verdict checked "
             "(`thresholds.yaml`).", ""]
    comparison = render_markdown(rows, [(c[0], c[1]) for c in charts], mlflow_used).split("\n", 1)[1]
    text += ["## Beside the default experiments", comparison]
    summary = out / SUMMARY_FILE
    write_text_atomic(summary, "\n".join(text))
    return summary
