"""The "Baseline" CNN of seed tutorial 001 (the six-step Keras course on CIFAR-10).

One conv block C6 5x5 (same) - BN - ReLU - 2x2/2 max-pool - dropout, then FC128 -
dropout - logits. Dropout 0.2 in both places, as in the tutorial.

Small inputs: all padding is "same", so any size works; the flattened width is
``ceil(H/2)*ceil(W/2)*6`` (1,536 on 32x32, 1,176 on 28x28).
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model


@register_model(
    "baseline",
    family="baseline",
    paper="tutorial baseline",
    reference="Seed tutorial 001 (TF2 Keras CIFAR-10 course), 'Baseline' model; no paper",
    source="001 (Keras Baseline on CIFAR-10)",
    defaults={"dropout": 0.2, "weight_decay": 0.0},
)
def baseline(input_shape, num_classes, *, dropout, weight_decay):
    """Baseline: C6 5x5 - BN - ReLU - maxpool - dropout - FC128 - dropout - logits."""
    inputs = blocks.image_input(input_shape)
    x = blocks.conv(inputs, 6, 5, weight_decay=weight_decay, name="block1_conv")
    x = blocks.bn_act(x, name="block1")
    x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name="block1_pool")(x)
    x = blocks.dropout(x, dropout, name="block1_dropout")
    x = keras.layers.Flatten(name="flatten")(x)
    x = blocks.dense(x, 128, weight_decay=weight_decay, name="fc1")
    x = blocks.dropout(x, dropout, name="fc1_dropout")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "baseline")
