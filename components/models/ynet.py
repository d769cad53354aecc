"""The Y-Network of tutorial 004 (Keras functional-API chapter), on one image input.

Two CNN branches see the same image: each is 3 x (Conv3x3-ReLU - Dropout - MaxPool2x2)
with 32-64-128 filters; the right branch uses dilation rate 2 to widen its receptive
field. Their outputs are concatenated, flattened, dropped out (0.4) and classified.
The book feeds the same image twice through two ``Input`` layers; since the pipeline's
models take one input, the single input here feeds both branches, which is the same
function.

Small inputs: three 2x2/2 valid max-pools need H, W >= 8 (3x3 maps at 28, 4x4 at 32).
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model


def _branch(x, *, side: str, dilation_rate: int, base_filters: int, dropout: float, weight_decay: float):
    filters = base_filters
    for index in range(1, 4):
        x = blocks.conv(x, filters, 3, activation="relu", dilation_rate=dilation_rate,
                        weight_decay=weight_decay, name=f"{side}_conv{index}")
        x = blocks.dropout(x, dropout, name=f"{side}_dropout{index}")
        x = keras.layers.MaxPooling2D(2, name=f"{side}_pool{index}")(x)
        filters *= 2  # double the filters as each pool halves the map
    return x


@register_model(
    "ynet",
    family="ynet",
    paper="Atienza 2020",
    reference="Atienza, Advanced Deep Learning with TensorFlow 2 and Keras, 2nd ed., Packt 2020, ch. 2 (Y-Network)",
    source="004 (Keras Y-Network on MNIST, 99.4-99.5%)",
    defaults={"base_filters": 32, "dropout": 0.4, "weight_decay": 0.0},
    min_input_size=8,
)
def ynet(input_shape, num_classes, *, base_filters, dropout, weight_decay):
    """Y-Network: plain and dilated 3-layer CNN branches, concatenated, dropout, logits."""
    inputs = blocks.image_input(input_shape)
    branch_args = dict(base_filters=base_filters, dropout=dropout, weight_decay=weight_decay)
    left = _branch(inputs, side="left", dilation_rate=1, **branch_args)
    right = _branch(inputs, side="right", dilation_rate=2, **branch_args)
    x = keras.layers.Concatenate(axis=-1, name="merge")([left, right])
    x = keras.layers.Flatten(name="flatten")(x)
    x = blocks.dropout(x, dropout, name="head_dropout")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "ynet")
