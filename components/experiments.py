"""One experiment name, everything derived from it.

An experiment is an entry of one of the experiment sets of params.yaml: a data set, a model
of the zoo, a recipe. Each set has its own DVC pipeline and its own output root
(:data:`EXPERIMENT_SETS`):

=============  ======================  ===========  ==================================================
section        pipeline                output root  what it is
=============  ======================  ===========  ==================================================
experiments    ``dvc.yaml``            ``.``        the default experiments: ``dvc repro``
zoo            ``zoo/paper/dvc.yaml``  zoo/paper    the papers' and tutorials' budgets (GPU): ``make zoo``
zoo_cpu        ``zoo/cpu/dvc.yaml``    zoo/cpu      every model on a fixed CPU budget: ``make zoo-cpu``
=============  ======================  ===========  ==================================================

Experiment names are unique across all sets (they also name the MLflow registered model).
Every output is keyed by the experiment's name, never by its (data set, model) pair, so two
experiments of the same pair (``cifar10-resnet20`` and ``cifar10-resnet20-paper``) never share
a file. The train and evaluate stages, the reports, the ``dvc.yaml`` files (by the same
templates) and the tests all take the layout from :func:`resolve`; ``<root>`` is the set's
output root (``.`` for the default experiments, so their paths carry no prefix):

==================================  =========================================================
``<prepare.out_root>/<dataset>/``   the prepared shards (where the prepare stage writes them)
``<root>/<train.models_dir>/<name>/`` ``model.keras``, ``train_metrics.json``, ``history.csv``...
``<root>/metrics/<name>/train.json``  training figures (DVC metrics; the train stage's)
``<root>/metrics/<name>/test.json``   test-split figures (DVC metrics; the evaluate stage's)
``<root>/metrics/<name>/verdict.json`` accepted or rejected, with every check
``<root>/metrics/<name>/accepted.json`` the last accepted test figures: the next run's baseline
``<root>/plots/<name>/history.csv``   per-epoch curves (DVC plots)
``<root>/plots/<name>/confusion.json`` the confusion rows, and ``confusion.png``, ``worst.png``
MLflow registered model ``<name>``  with alias ``champion`` on the last accepted version
==================================  =========================================================

No TensorFlow here: resolving is cheap, so a typo in a name fails in milliseconds.
"""
from __future__ import annotations

import dataclasses
import difflib
import pathlib
from typing import Any, Mapping

from components.config import ConfigError



@dataclasses.dataclass(frozen=True)
class ExperimentSet:
    """A section of params.yaml holding experiments, the DVC pipeline that runs them and where
    their outputs go (relative to the repository root)."""

    section: str
    pipeline: str  # the dvc.yaml whose train/evaluate stages iterate over the section
    root: str  # output root: models, metrics and plots live under it
    description: str


EXPERIMENT_SETS = (
    ExperimentSet("experiments", "dvc.yaml", ".", "the default experiments (`dvc repro`)"),
    ExperimentSet("zoo", "zoo/paper/dvc.yaml", "zoo/paper", "the papers' and tutorials' budgets, for GPUs (`make zoo`)"),
    ExperimentSet("zoo_cpu", "zoo/cpu/dvc.yaml", "zoo/cpu", "every model on a fixed CPU budget (`make zoo-cpu`)"),
)
EXPERIMENT_SECTIONS = tuple(s.section for s in EXPERIMENT_SETS)
DEFAULT_DATA_ROOT = "data/tfrecords"  # prepare.out_root's default
DEFAULT_MODELS_ROOT = "models"  # train.models_dir's default
METRICS_ROOT = "metrics"
PLOTS_ROOT = "plots"
# File names inside metrics/<name>/.
TRAIN_METRICS_FILE, TEST_METRICS_FILE, VERDICT_FILE, ACCEPTED_FILE = "train.json", "test.json", "verdict.json", "accepted.json"


@dataclasses.dataclass(frozen=True)
class ExperimentPaths:
    """Where one experiment's inputs and outputs live (relative to the repository root by default)."""

    data: pathlib.Path  # <prepare.out_root>/<dataset>
    model_dir: pathlib.Path  # <train.models_dir>/<name>
    metrics_dir: pathlib.Path  # metrics/<name>
    plots_dir: pathlib.Path  # plots/<name>

    @property
    def model(self) -> pathlib.Path:
        return self.model_dir / "model.keras"

    @property
    def train_summary(self) -> pathlib.Path:
        """The train stage's summary inside the model directory (MLflow run id, registered version...)."""
        return self.model_dir / "train_metrics.json"

    @property
    def model_history(self) -> pathlib.Path:
        return self.model_dir / "history.csv"

    @property
    def train_metrics(self) -> pathlib.Path:
        """The DVC metrics copy of :attr:`train_summary`."""
        return self.metrics_dir / TRAIN_METRICS_FILE

    @property
    def test_metrics(self) -> pathlib.Path:
        return self.metrics_dir / TEST_METRICS_FILE

    @property
    def verdict(self) -> pathlib.Path:
        return self.metrics_dir / VERDICT_FILE

    @property
    def accepted(self) -> pathlib.Path:
        return self.metrics_dir / ACCEPTED_FILE

    @property
    def history(self) -> pathlib.Path:
        """The DVC plots copy of :attr:`model_history`."""
        return self.plots_dir / "history.csv"

    @property
    def confusion_json(self) -> pathlib.Path:
        return self.plots_dir / "confusion.json"

    @property
    def confusion_png(self) -> pathlib.Path:
        return self.plots_dir / "confusion.png"

    @property
    def worst_png(self) -> pathlib.Path:
        return self.plots_dir / "worst.png"

    def evaluation_outputs(self) -> list[pathlib.Path]:
        """What every evaluation writes and logs to MLflow (the accepted baseline is not logged)."""
        return [self.test_metrics, self.verdict, self.confusion_json, self.confusion_png, self.worst_png]


@dataclasses.dataclass(frozen=True)
class ExperimentRef:
    """An experiment of params.yaml, by name: what it trains and where everything of it lives."""

    name: str
    dataset: str  # prepared data set name, e.g. fashion_mnist
    model: str  # zoo model name, e.g. lenet5
    section: str  # its set's section: experiments (dvc repro), zoo or zoo_cpu
    entry: Mapping[str, Any]  # the raw params entry (recipe, overrides...: the train stage's business)
    paths: ExperimentPaths

    @property
    def registered_model_name(self) -> str:
        """The MLflow registry name of the experiment's models: the experiment's own name."""
        return self.name

    @property
    def where(self) -> str:
        """The params key of the entry, for messages: ``experiments.<name>``."""
        return f"{self.section}.{self.name}"

    def stage(self, kind: str) -> str:
        """The DVC stage that runs step ``kind`` (train, evaluate) of this experiment, as
        ``dvc repro`` takes it: ``train@<name>``, or ``zoo/cpu/dvc.yaml:train@<name>``."""
        pipeline = experiment_set(self.section).pipeline
        return f"{kind}@{self.name}" if pipeline == "dvc.yaml" else f"{pipeline}:{kind}@{self.name}"


def data_root(params: Mapping[str, Any]) -> str:
    """Where prepared data sets live: ``prepare.out_root`` (the prepare stage writes there)."""
    return str(_section(params, "prepare").get("out_root") or DEFAULT_DATA_ROOT)


def models_root(params: Mapping[str, Any]) -> str:
    """Where exported models live: ``train.models_dir``."""
    return str(_section(params, "train").get("models_dir") or DEFAULT_MODELS_ROOT)


def experiment_set(section: str) -> ExperimentSet:
    """The set whose params section is ``section``."""
    for candidate in EXPERIMENT_SETS:
        if candidate.section == section:
            return candidate
    raise ConfigError(f"unknown experiment set '{section}'; sets: {', '.join(EXPERIMENT_SECTIONS)}")


def experiment_paths(name: str, dataset: str, params: Mapping[str, Any],
                     root: str | pathlib.Path = ".", section: str = "experiments") -> ExperimentPaths:
    """The layout of experiment ``name`` of set ``section`` on data set ``dataset`` under ``root``."""
    root = pathlib.Path(root)
    outputs = root / experiment_set(section).root
    return ExperimentPaths(data=root / data_root(params) / dataset, model_dir=outputs / models_root(params) / name,
                           metrics_dir=outputs / METRICS_ROOT / name, plots_dir=outputs / PLOTS_ROOT / name)


def catalogue(params: Mapping[str, Any], where: str = "params.yaml",
              root: str | pathlib.Path = ".") -> dict[str, ExperimentRef]:
    """Every experiment of every set of ``params`` (raw YAML), by name.

    Checks only what every stage relies on: each entry is a mapping with a non-empty string
    ``dataset`` and ``model``, and no name is used twice (it keys the outputs and the MLflow
    registered model). The rest of an entry is the train stage's to check.
    """
    found: dict[str, ExperimentRef] = {}
    for section in EXPERIMENT_SECTIONS:
        entries = params.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{where}: '{section}' must be a mapping of experiment names to "
                              f"{{dataset: ..., model: ..., recipe: ...}}, got {type(entries).__name__} {entries!r}")
        for name, entry in entries.items():
            key = f"{section}.{name}"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where}: {key} must be a mapping with 'dataset' and 'model', got {entry!r}")
            values = {}
            for field in ("dataset", "model"):
                value = entry.get(field)
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"{where}: {key}.{field} must be a non-empty string, got {value!r}")
                values[field] = value
            name = str(name)
            if name in found:
                raise ConfigError(f"{where}: experiment '{name}' is defined twice, as {found[name].where} and {key}; "
                                  f"names key the outputs and the MLflow registered model, so each must be unique "
                                  f"across {', '.join(EXPERIMENT_SECTIONS)}")
            found[name] = ExperimentRef(name, values["dataset"], values["model"], section, entry,
                                        experiment_paths(name, values["dataset"], params, root, section))
    if not found:
        raise ConfigError(f"{where}: no experiments; expected a mapping 'experiments' (or {', '.join(EXPERIMENT_SECTIONS[1:])}) of "
                          f"<name>: {{dataset: ..., model: ..., recipe: ...}}")
    return found


def resolve(name: str, params: Mapping[str, Any], where: str = "params.yaml",
            root: str | pathlib.Path = ".") -> ExperimentRef:
    """The experiment called ``name``; an unknown name lists the known ones and the closest."""
    experiments = catalogue(params, where, root)
    try:
        return experiments[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(experiments), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: unknown experiment '{name}'; defined under {', '.join(EXPERIMENT_SECTIONS)}: "
                          f"{', '.join(sorted(experiments))}.{hint}") from None


def _section(params: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = params.get(name)
    return section if isinstance(section, Mapping) else {}
