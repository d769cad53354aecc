"""The model zoo: every CNN of the seed tutorials behind one registry.

    >>> from components.models import create_model, list_models, model_info
    >>> model = create_model("resnet20", input_shape=(32, 32, 3), num_classes=10)
    >>> model_info("resnet20").defaults
    {'shortcut': 'identity', 'weight_decay': 0.0001}

Every model is a Keras functional model that takes one already-normalised image of the
data set's own shape (the training stage puts normalisation in front) and returns float32
logits from a layer named ``"logits"`` (no softmax), so it trains under mixed precision.
Each family module says in its docstring how it adapts to 28x28 / 32x32 inputs.
"""
from __future__ import annotations

# Importing the family modules registers their models.
from components.models import (  # noqa: F401
    airbench,
    alexnet,
    baseline,
    densenet,
    inception,
    lenet,
    mlp,
    resnet,
    vgg,
    ynet,
)
from components.models.registry import (
    HPARAM_RULES,
    LOGITS_LAYER,
    ModelConfigError,
    ModelInfo,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
    resolve_hparams,
)

__all__ = [
    "HPARAM_RULES",
    "LOGITS_LAYER",
    "ModelConfigError",
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "float16_unsafe_reason",
    "resolve_hparams",
]


def float16_unsafe_reason(name: str) -> str | None:
    """Why model ``name`` is not safe in float16 (None when it is): untrained, in inference mode
    (validation, evaluation before BatchNorm's statistics are learnt) its activations overflow
    float16 (components/models/resnet.py). The trainer refuses ``mixed_precision: float16`` for
    it and ``auto`` picks bfloat16, so no run can hit that."""
    return resnet.FLOAT16_UNSAFE_REASON if name in resnet.FLOAT16_UNSAFE else None
