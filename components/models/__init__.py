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
    "resolve_hparams",
]
