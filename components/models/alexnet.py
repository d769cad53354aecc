"""AlexNet (Krizhevsky et al. 2012) in the two small-image forms of the seed tutorials.

``alexnet`` — the CIFAR form of tutorial 000 (after TensorFlow's CIFAR-10 model): conv64
5x5 valid - maxpool 3/2 - conv64 5x5 same - maxpool 3/2 - FC384 - FC192 - logits. The
tutorial's code has no dropout or LRN; ``dropout`` (default 0) adds AlexNet's FC dropout.

``alexnet8`` — the 8-layer AlexNet with BN of tutorial 001: conv96 3x3 - BN - ReLU -
maxpool 3/2 - conv256 3x3 - BN - ReLU - maxpool 3/2 - conv384 - conv384 - conv256 -
maxpool 3/2 - FC2048 - dropout - FC2048 - dropout - logits (dropout 0.5).

Small inputs: both use the paper's valid convolutions/pools scaled down to 3x3/5x5
kernels, so spatial size shrinks fast: ``alexnet`` needs H, W >= 11 (6x6 maps at 32, 5x5
at 28); ``alexnet8`` needs >= 21 (2x2 maps at 32, 1x1 at 28).
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model

PAPER = "Krizhevsky et al. 2012"
REFERENCE = "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional Neural Networks, NeurIPS 2012"


def _max_pool(x, name: str):
    return keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="valid", name=name)(x)


@register_model(
    "alexnet",
    family="alexnet",
    paper=PAPER,
    reference=REFERENCE + "; CIFAR form of TensorFlow's CIFAR-10 tutorial",
    source="000 (AlexNet CIFAR form, 73.7%)",
    defaults={"dropout": 0.0, "weight_decay": 0.0},
    min_input_size=11,
)
def alexnet(input_shape, num_classes, *, dropout, weight_decay):
    """AlexNet, CIFAR form: conv64 5x5 - pool - conv64 5x5 - pool - FC384 - FC192 - logits."""
    inputs = blocks.image_input(input_shape)
    x = blocks.conv(inputs, 64, 5, padding="valid", activation="relu", weight_decay=weight_decay, name="conv1")
    x = _max_pool(x, "pool1")
    x = blocks.conv(x, 64, 5, padding="same", activation="relu", weight_decay=weight_decay, name="conv2")
    x = _max_pool(x, "pool2")
    x = keras.layers.Flatten(name="flatten")(x)
    x = blocks.dense(x, 384, weight_decay=weight_decay, name="fc3")
    x = blocks.dropout(x, dropout, name="fc3_dropout")
    x = blocks.dense(x, 192, weight_decay=weight_decay, name="fc4")
    x = blocks.dropout(x, dropout, name="fc4_dropout")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "alexnet")


@register_model(
    "alexnet8",
    family="alexnet",
    paper=PAPER,
    reference=REFERENCE + "; 8-layer small-image form with BN",
    source="001 (Keras AlexNet8 on CIFAR-10)",
    defaults={"dropout": 0.5, "weight_decay": 0.0},
    min_input_size=21,
)
def alexnet8(input_shape, num_classes, *, dropout, weight_decay):
    """AlexNet8: 5 convs (96-256-384-384-256, BN on the first two) and FC2048-FC2048."""
    inputs = blocks.image_input(input_shape)
    x = blocks.conv(inputs, 96, 3, padding="valid", weight_decay=weight_decay, name="conv1")
    x = blocks.bn_act(x, name="conv1")
    x = _max_pool(x, "pool1")
    x = blocks.conv(x, 256, 3, padding="valid", weight_decay=weight_decay, name="conv2")
    x = blocks.bn_act(x, name="conv2")
    x = _max_pool(x, "pool2")
    for index, filters in ((3, 384), (4, 384), (5, 256)):
        x = blocks.conv(x, filters, 3, activation="relu", weight_decay=weight_decay, name=f"conv{index}")
    x = _max_pool(x, "pool3")
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = blocks.dense(x, 2048, weight_decay=weight_decay, name=f"fc{index}")
        x = blocks.dropout(x, dropout, name=f"fc{index}_dropout")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "alexnet8")
