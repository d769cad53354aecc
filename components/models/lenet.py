"""LeNet-5 (LeCun et al. 1998) as in seed tutorial 001: C1-S2-C3-S4-F5-F6-output.

C1: 6 5x5 valid convs, S2: 2x2/2 pool, C3: 16 5x5 valid convs, S4: 2x2/2 pool, then
dense 120-84-num_classes. Sigmoid activations and max pooling are the tutorial's
choices (``activation``/``pooling`` hyperparameters give LeCun's tanh / average
subsampling); 61,706 parameters on 32x32x1 with 10 classes.

Small inputs: LeNet-5 was designed for 32x32; like LeCun, who padded the 28x28 MNIST
digits to 32x32, inputs smaller than 32 are zero-padded to 32 (layer ``pad_to_32``),
so the parameter count on 28x28x1 is the paper's as well. Larger inputs are used as is.
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model

PAPER = "LeCun et al. 1998"
REFERENCE = "LeCun, Bottou, Bengio & Haffner, Gradient-based learning applied to document recognition, Proc. IEEE 1998"
DESIGN_SIZE = 32  # LeNet-5's input plane


def _pad_to_design_size(x, height: int, width: int):
    """Zero-pad H and W up to 32 (centered, extra row/column at the bottom/right)."""
    pad_h, pad_w = max(0, DESIGN_SIZE - height), max(0, DESIGN_SIZE - width)
    if pad_h == 0 and pad_w == 0:
        return x
    padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return keras.layers.ZeroPadding2D(padding, name="pad_to_32")(x)


def _pool(x, kind: str, name: str):
    layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    return layer(pool_size=2, strides=2, name=name)(x)


@register_model(
    "lenet5",
    family="lenet",
    paper=PAPER,
    reference=REFERENCE,
    source="001 (Keras LeNet5 on CIFAR-10), 002 (MNIST)",
    defaults={"activation": "sigmoid", "pooling": "max", "weight_decay": 0.0},
)
def lenet5(input_shape, num_classes, *, activation, pooling, weight_decay):
    """LeNet-5: C6 5x5 - S2 - C16 5x5 - S4 - F120 - F84 - logits."""
    inputs = blocks.image_input(input_shape)
    x = _pad_to_design_size(inputs, input_shape[0], input_shape[1])
    x = blocks.conv(x, 6, 5, padding="valid", activation=activation, weight_decay=weight_decay, name="c1_conv")
    x = _pool(x, pooling, "s2_pool")
    x = blocks.conv(x, 16, 5, padding="valid", activation=activation, weight_decay=weight_decay, name="c3_conv")
    x = _pool(x, pooling, "s4_pool")
    x = keras.layers.Flatten(name="flatten")(x)
    x = blocks.dense(x, 120, activation=activation, weight_decay=weight_decay, name="f5_dense")
    x = blocks.dense(x, 84, activation=activation, weight_decay=weight_decay, name="f6_dense")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "lenet5")
