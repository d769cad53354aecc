"""Typed training configuration: recipes, experiments and the stage's own settings.

``params.yaml`` holds three sections the train stage reads:

* ``train``: settings of the stage (where data and models live, precision, XLA,
  distribution, input-pipeline knobs shared by every experiment);
* ``recipes``: named recipes (optimizer, learning-rate schedule, epochs, batch size,
  regularisation, augmentation, seed): data, not code;
* ``experiments`` (and the zoo sets ``zoo`` and ``zoo_cpu``): experiment name -> data set, model,
  recipe and overrides.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

from components.config import ConfigError, from_dict, load_params
from components.experiments import ExperimentPaths, catalogue, resolve


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer; ``learning_rate`` is the peak rate the schedule scales."""

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    beta_1: float = 0.9  # adam, adamw
    beta_2: float = 0.999  # adam, adamw
    epsilon: float = 1e-7
    rho: float = 0.9  # rmsprop's moving-average factor
    decoupled_weight_decay: float = 0.0  # adamw's per-step decay (not the L2 loss term)
    global_clipnorm: Optional[float] = None

    def __post_init__(self):
        if not 0 < self.learning_rate <= 10:
            raise ValueError(f"optimizer.learning_rate must be in (0, 10], got {self.learning_rate}")
        if not 0 <= self.momentum < 1 or not 0 <= self.beta_1 < 1 or not 0 <= self.beta_2 < 1 or not 0 <= self.rho < 1:
            raise ValueError("optimizer.momentum, beta_1, beta_2 and rho must be in [0, 1); got "
                             f"{self.momentum}, {self.beta_1}, {self.beta_2}, {self.rho}")
        if self.decoupled_weight_decay < 0 or self.epsilon <= 0:
            raise ValueError(f"optimizer.decoupled_weight_decay must be >= 0 and epsilon > 0; got "
                             f"{self.decoupled_weight_decay}, {self.epsilon}")
        if self.decoupled_weight_decay and self.name != "adamw":
            raise ValueError(f"optimizer.decoupled_weight_decay is AdamW's; got it with {self.name!r} "
                             "(use the recipe's weight_decay for an L2 term)")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate over training, as a multiple of the optimizer's peak rate.

    All times are in epochs (fractions allowed); they are turned into steps once the
    number of steps per epoch is known.
    """

    name: Literal["constant", "step", "exponential", "cosine", "one_cycle", "plateau"] = "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0 to the peak rate
    boundaries: list[float] = dataclasses.field(default_factory=list)  # step: epochs where the rate drops
    factors: list[float] = dataclasses.field(default_factory=list)  # step: multiplier after each boundary
    decay_rate: float = 0.1  # exponential: multiplier per decay_epochs
    decay_epochs: float = 1.0
    staircase: bool = False  # exponential: drop in whole decay periods
    final_fraction: float = 0.0  # cosine, one_cycle: final rate as a fraction of the peak
    start_fraction: float = 0.04  # one_cycle: initial rate as a fraction of the peak
    peak_at: float = 0.25  # one_cycle: fraction of training at which the rate peaks
    plateau_factor: float = 0.1  # plateau: multiplier when validation loss stalls
    plateau_patience: int = 5  # plateau: epochs without improvement before a drop
    min_fraction: float = 0.0  # plateau: floor as a fraction of the peak

    def __post_init__(self):
        if self.warmup_epochs < 0:
            raise ValueError(f"schedule.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.name == "step":
            if len(self.boundaries) != len(self.factors) or not self.boundaries:
                raise ValueError(f"schedule 'step' needs as many factors as boundaries (>= 1), got "
                                 f"boundaries={self.boundaries}, factors={self.factors}")
            if list(self.boundaries) != sorted(self.boundaries) or min(self.boundaries) <= 0:
                raise ValueError(f"schedule.boundaries must be increasing epochs > 0, got {self.boundaries}")
            if min(self.factors) <= 0:
                raise ValueError(f"schedule.factors must be > 0, got {self.factors}")
        if not 0 < self.decay_rate <= 1 or self.decay_epochs <= 0:
            raise ValueError(f"schedule.decay_rate must be in (0, 1] and decay_epochs > 0, got "
                             f"{self.decay_rate}, {self.decay_epochs}")
        for key in ("final_fraction", "start_fraction", "min_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"schedule.{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0 < self.peak_at < 1:
            raise ValueError(f"schedule.peak_at must be in (0, 1), got {self.peak_at}")
        if self.name == "plateau" and self.warmup_epochs:
            raise ValueError("schedule 'plateau' cannot warm up: ReduceLROnPlateau needs a plain rate to scale")
        if not 0 < self.plateau_factor < 1 or self.plateau_patience < 1:
            raise ValueError(f"schedule.plateau_factor must be in (0, 1) and plateau_patience >= 1, got "
                             f"{self.plateau_factor}, {self.plateau_patience}")


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """How to train: everything but the data and the architecture."""

    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    epochs: int = 10
    steps: Optional[int] = None  # total optimizer steps instead of epochs (rounded up to whole epochs; under one
    # epoch's worth: one epoch of that many batches)
    batch_size: int = 128  # global batch, split over replicas
    weight_decay: Optional[float] = None  # L2 coefficient on kernels; None keeps the model's default
    dropout: Optional[float] = None  # None keeps the model's default
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off
    augment: list[str] = dataclasses.field(default_factory=lambda: ["standard"])
    seed: int = 0
    description: str = ""

    def __post_init__(self):
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError(f"epochs and steps must be >= 1, got epochs={self.epochs}, steps={self.steps}")
        if not 1 <= self.batch_size <= 65536:
            raise ValueError(f"batch_size must be in [1, 65536], got {self.batch_size}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One training: a data set, a model of the zoo and a recipe (with overrides)."""

    dataset: str
    model: str
    recipe: str
    model_hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # recipe keys to change
    description: str = ""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section: settings shared by every experiment."""

    models_dir: str = "models"
    checkpoints_dir: str = "checkpoints"  # resumable state, outside DVC's outputs so it survives a kill
    # The Keras backend (components/backend.py); $KERAS_BACKEND, when set, wins and is recorded.
    backend: Literal["tensorflow", "jax"] = "tensorflow"
    # float16 / bfloat16: mixed precision in that dtype (variables and logits stay float32);
    # on: float16; auto: float16 with a GPU (bfloat16 for the models float16 overflows,
    # components/models/resnet.py FLOAT16_UNSAFE), bfloat16 on a CPU with bfloat16 in hardware
    # (components/backend.py cpu_has_bfloat16), else float32; off: float32.
    mixed_precision: Literal["auto", "on", "off", "float16", "bfloat16"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"  # auto: on with a GPU or on JAX (XLA halves TF's CPU speed here)
    # auto: several workers (JAX) when KERAS_DISTRIBUTION_NUM_PROCESSES > 1, Mirrored over several local GPUs
    # (TensorFlow), else one device (components/training/distribute.py).
    distribute: Literal["auto", "default", "mirrored", "multi_worker"] = "auto"
    tracking: bool = True  # log to MLflow
    register_model: bool = True  # register the exported model under the experiment's name
    # Same seed, hardware and software -> byte-identical weights: seeds set, op determinism
    # on, the input pipeline's order forced deterministic. Slower (README, Training).
    deterministic: bool = False
    # Train steps per compiled call (Keras' steps_per_execution): one Python round trip for
    # several steps, the same updates and weights (tested). Worth it for small models, whose
    # steps take milliseconds (LeNet-5 on Fashion-MNIST: ~7 ms on 2 cores). Lowered to fit
    # the epoch where Keras needs that (components/training/inputs.py execution_steps).
    steps_per_execution: int = 1
    input: dict[str, Any] = dataclasses.field(default_factory=dict)  # components.inputs.InputConfig keys

    def __post_init__(self):
        if self.steps_per_execution < 1:
            raise ValueError(f"steps_per_execution must be >= 1 train steps per compiled call, "
                             f"got {self.steps_per_execution}")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A fully resolved experiment: what the trainer runs and MLflow records."""

    name: str
    dataset: str
    model: str
    recipe_name: str
    recipe: RecipeConfig
    model_hparams: dict[str, Any]
    paths: ExperimentPaths  # where its data and outputs live (components.experiments)
    train_stage: str = ""  # the DVC stage that trains it, as `dvc repro` takes it (recorded in MLflow)

    @property
    def registered_model_name(self) -> str:
        """The MLflow registry name: the experiment's own name (see components.experiments)."""
        return self.name


def resolve_experiment(name: str, params: dict, where: str = "params.yaml") -> Experiment:
    """Look ``name`` up (``components.experiments.resolve``) and resolve its recipe with overrides."""
    ref = resolve(name, params, where)
    spec = from_dict(ExperimentConfig, ref.entry, where=f"{where}:{ref.where}")
    recipes = params.get("recipes") or {}
    if spec.recipe not in recipes:
        raise ConfigError(f"{where}:{ref.where}.recipe: unknown recipe {spec.recipe!r}; "
                          f"recipes: {', '.join(sorted(recipes)) or 'none'}")
    merged = _deep_merge(recipes[spec.recipe], spec.overrides)
    recipe = from_dict(RecipeConfig, merged, where=f"{where}:recipes.{spec.recipe} (+ {ref.where}.overrides)")
    from components.data import DataError, get_dataset
    from components.models import ModelConfigError, model_info

    try:
        get_dataset(spec.dataset)
    except DataError as error:
        raise ConfigError(f"{where}:{ref.where}.dataset: {error}") from None
    prepared = (params.get("prepare") or {}).get("datasets")
    if isinstance(prepared, list) and spec.dataset not in prepared:
        raise ConfigError(f"{where}:{ref.where}.dataset: '{spec.dataset}' is not one of prepare.datasets "
                          f"({', '.join(map(str, prepared))}), so no stage prepares its data; add it there")
    try:
        model_info(spec.model)
    except ModelConfigError as error:
        raise ConfigError(f"{where}:{ref.where}.model: {error}") from None
    return Experiment(name, spec.dataset, spec.model, spec.recipe, recipe, dict(spec.model_hparams), ref.paths,
                      ref.stage("train"))


def load_train_settings(params_path: str = "params.yaml") -> TrainSettings:
    """The ``train`` section of ``params_path``, typed (imports no Keras: the backend is chosen from it)."""
    return from_dict(TrainSettings, load_params(params_path).get("train"), where=f"{params_path}:train")


def load_experiment(name: str, params_path: str = "params.yaml") -> tuple[Experiment, TrainSettings]:
    """The experiment ``name`` (its data read where prepare writes it) and the ``train`` settings.

    Every other experiment of every set is resolved too (:func:`check_experiments`), so a
    typo anywhere in a set fails its first stage, before anything trains.
    Imports Keras (to check the model's name): activate the backend first."""
    params = load_params(params_path)
    settings = from_dict(TrainSettings, params.get("train"), where=f"{params_path}:train")
    experiment = resolve_experiment(name, params, params_path)
    check_experiments(params, params_path)
    return experiment, settings


def check_experiments(params: dict, where: str = "params.yaml") -> dict[str, Experiment]:
    """Resolve every experiment of every set: its recipe and overrides, model, data set (one
    that ``prepare.datasets`` prepares). The first problem raises, naming the experiment."""
    return {name: resolve_experiment(name, params, where) for name in catalogue(params, where)}


def _deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base or {})
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
