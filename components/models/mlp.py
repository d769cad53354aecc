"""Multi-layer perceptron: the MNIST MLP 784-500-10 of seed tutorial 002.

Small inputs: the image is flattened, so any ``(H, W, C)`` works; the input width is
``H*W*C`` (784 for 28x28x1, 3072 for 32x32x3). One ReLU hidden layer of 500 units, L2
weight decay 1e-4 on both kernels (the tutorial's ``REGULARIZATION_RATE``); the
tutorial's moving-average of weights is a training-stage concern, not part of the model.
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model

PAPER = "Rumelhart et al. 1986"
REFERENCE = "Rumelhart, Hinton & Williams, Learning representations by back-propagating errors, Nature 1986"


@register_model(
    "mlp",
    family="mlp",
    paper=PAPER,
    reference=REFERENCE,
    source="002 (TF1 MNIST MLP, 98.5%)",
    defaults={"hidden_units": 500, "activation": "relu", "weight_decay": 1e-4},
)
def mlp(input_shape, num_classes, *, hidden_units, activation, weight_decay):
    """MLP 784-500-10: flatten, one hidden layer, logits."""
    inputs = blocks.image_input(input_shape)
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = blocks.dense(x, hidden_units, activation=activation, weight_decay=weight_decay, name="fc1")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "mlp")
