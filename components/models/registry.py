"""The model registry: every architecture is registered by name with its metadata.

A family module registers each variant with :func:`register_model` (timm style)::

    @register_model("vgg16", family="vgg", paper=PAPER, reference=REFERENCE,
                    source="001 (Keras VGG16)", defaults={"dropout": 0.2, "weight_decay": 0.0})
    def vgg16(input_shape, num_classes, **hparams):
        # (the first docstring line becomes the model's description)
        ...

:func:`create_model` validates the name, the input shape, the number of classes and
every hyperparameter *before* building anything, so a typo fails in milliseconds with
a message that says what was received, what is allowed and for which model.
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
from typing import Any, Callable, Mapping

import keras

LOGITS_LAYER = "logits"


class ModelConfigError(ValueError):
    """A bad model name, input shape, class count or hyperparameter."""


class UnknownModelError(ModelConfigError):
    """The requested model name is not registered."""


# --------------------------------------------------------------------------- hparam rules
@dataclasses.dataclass(frozen=True)
class HparamRule:
    """How one hyperparameter is checked: a predicate and the words for what it allows."""

    check: Callable[[Any], bool]
    allowed: str


def _is_real(value: Any) -> bool:
    # bool is an int subclass; True as a dropout rate is a bug, not a number.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _one_of(*choices: str) -> HparamRule:
    return HparamRule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def _positive_int_sequence(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(_is_int(v) and v > 0 for v in value)
    )


# One rule per hyperparameter name, shared by all families, so "dropout" means the same
# thing everywhere. A family may only declare defaults for names listed here.
HPARAM_RULES: dict[str, HparamRule] = {
    "dropout": HparamRule(lambda v: _is_real(v) and 0.0 <= v < 1.0, "a float in [0, 1)"),
    "weight_decay": HparamRule(lambda v: _is_real(v) and v >= 0.0, "a float >= 0 (L2 coefficient)"),
    "activation": _one_of("relu", "sigmoid", "tanh"),
    "pooling": _one_of("max", "avg"),
    "shortcut": _one_of("identity", "projection"),
    "stem": _one_of("auto", "cifar", "imagenet"),
    "hidden_units": HparamRule(lambda v: _is_int(v) and v > 0, "a positive int"),
    "base_filters": HparamRule(lambda v: _is_int(v) and v > 0, "a positive int"),
    "growth_rate": HparamRule(lambda v: _is_int(v) and v > 0, "a positive int"),
    "compression": HparamRule(lambda v: _is_real(v) and 0.0 < v <= 1.0, "a float in (0, 1]"),
    "block_layers": HparamRule(_positive_int_sequence, "a non-empty list of positive ints"),
    "widths": HparamRule(_positive_int_sequence, "a non-empty list of positive ints (filters per block)"),
}


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered model (what ``model_info`` returns)."""

    name: str
    family: str
    paper: str  # short citation shown in tables, e.g. "He et al. 2016"
    reference: str  # full title and arXiv id / venue
    source: str  # which seed tutorial the variant comes from
    description: str  # first line of the builder's docstring
    defaults: Mapping[str, Any]
    min_input_size: int  # smallest height/width the architecture accepts
    builder: Callable[..., keras.Model] = dataclasses.field(repr=False, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    paper: str,
    reference: str,
    source: str,
    defaults: Mapping[str, Any] | None = None,
    min_input_size: int = 1,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Decorator registering ``builder(input_shape, num_classes, **hparams)`` under ``name``.

    ``defaults`` lists every hyperparameter the model accepts, with its default value;
    each name must have a rule in :data:`HPARAM_RULES` and each default must pass it,
    so a mistake in a family module fails at import, not at training time.
    """
    defaults = dict(defaults or {})
    where = f"register_model({name!r})"
    for key, value in defaults.items():
        if key not in HPARAM_RULES:
            raise ModelConfigError(f"{where}: hyperparameter {key!r} has no rule in HPARAM_RULES")
        _check_hparam(name, key, value)
    if not (_is_int(min_input_size) and min_input_size >= 1):
        raise ModelConfigError(f"{where}: min_input_size must be a positive int, got {min_input_size!r}")

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _REGISTRY:
            raise ModelConfigError(f"{where}: name already registered by {_REGISTRY[name].builder.__module__}")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelInfo(
            name=name,
            family=family,
            paper=paper,
            reference=reference,
            source=source,
            description=doc[0] if doc else "",
            defaults=defaults,
            min_input_size=min_input_size,
            builder=builder,
        )
        return builder

    return decorator


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of all registered models, optionally only those of one family."""
    return sorted(n for n, info in _REGISTRY.items() if family is None or info.family == family)


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (family, paper, defaults, minimum input size)."""
    return _lookup(name)


def create_model(
    name: str,
    input_shape: tuple[int, int, int] | list[int],
    num_classes: int,
    **hparams: Any,
) -> keras.Model:
    """Build the registered model ``name`` as a Keras functional model.

    Args:
        name: a name from :func:`list_models`.
        input_shape: ``(height, width, channels)`` of one already-normalised image.
        num_classes: number of output logits (>= 2).
        **hparams: overrides of the model's defaults (see ``model_info(name).defaults``).

    Returns:
        A functional ``keras.Model`` named ``name`` whose output is the float32 layer
        ``"logits"`` of shape ``(batch, num_classes)`` (no softmax).

    Raises:
        UnknownModelError: ``name`` is not registered (the message lists close matches).
        ModelConfigError: a bad input shape, class count or hyperparameter.
    """
    info = _lookup(name)
    shape = _check_input_shape(info, input_shape)
    _check_num_classes(name, num_classes)
    resolved = resolve_hparams(name, **hparams)
    try:
        model = info.builder(shape, int(num_classes), **resolved)
    except ModelConfigError:
        raise
    except ValueError as error:
        # Keras reports e.g. a negative spatial size deep inside a layer; say which model.
        raise ModelConfigError(
            f"model {name!r} could not be built for input_shape={shape} with {resolved}: {error}"
        ) from error
    _check_built_model(name, model, num_classes)
    return model


def resolve_hparams(name: str, **hparams: Any) -> dict[str, Any]:
    """The model's defaults updated with ``hparams``, after checking every override."""
    info = _lookup(name)
    unknown = sorted(set(hparams) - set(info.defaults))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in info.defaults.items()) or "none"
        raise ModelConfigError(
            f"model {name!r}: unknown hyperparameter(s) {unknown}; allowed (with defaults): {allowed}"
        )
    for key, value in hparams.items():
        _check_hparam(name, key, value)
    return {**info.defaults, **hparams}


# --------------------------------------------------------------------------- checks
def _lookup(name: str) -> ModelInfo:
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}"
    )


def _check_hparam(model: str, key: str, value: Any) -> None:
    rule = HPARAM_RULES[key]
    if not rule.check(value):
        raise ModelConfigError(
            f"model {model!r}: hyperparameter {key}={value!r} is invalid; expected {rule.allowed}"
        )


def _check_input_shape(info: ModelInfo, input_shape: Any) -> tuple[int, int, int]:
    expected = "(height, width, channels) of positive ints, e.g. (32, 32, 3) or (28, 28, 1)"
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ModelConfigError(f"model {info.name!r}: input_shape={input_shape!r} is invalid; expected {expected}")
    if not all(_is_int(d) and d > 0 for d in input_shape):
        raise ModelConfigError(f"model {info.name!r}: input_shape={input_shape!r} is invalid; expected {expected}")
    height, width, channels = (int(d) for d in input_shape)
    if min(height, width) < info.min_input_size:
        raise ModelConfigError(
            f"model {info.name!r}: input_shape={tuple(input_shape)} is too small; "
            f"height and width must be >= {info.min_input_size} for this architecture"
        )
    return height, width, channels


def _check_num_classes(model: str, num_classes: Any) -> None:
    if not (_is_int(num_classes) and num_classes >= 2):
        raise ModelConfigError(f"model {model!r}: num_classes={num_classes!r} is invalid; expected an int >= 2")


def _check_built_model(name: str, model: keras.Model, num_classes: int) -> None:
    # The interface promises a float32 "logits" output; fail loudly if a builder forgets.
    output = model.outputs[0] if len(model.outputs) == 1 else None
    if output is None or tuple(output.shape) != (None, num_classes):
        raise AssertionError(
            f"builder of {name!r} returned outputs {model.outputs}, expected one of shape (None, {num_classes})"
        )
    if model.layers[-1].name != LOGITS_LAYER or model.layers[-1].dtype_policy.compute_dtype != "float32":
        raise AssertionError(f"builder of {name!r} must end in a float32 layer named {LOGITS_LAYER!r}")
