"""VGG (Simonyan & Zisserman 2015) with batch norm and the CIFAR head of seed tutorial 001.

Each configuration (A=11, B=13, D=16, E=19 weight layers) is a stack of 3x3 same-padded
Conv-BN-ReLU layers in five blocks (64-128-256-512-512 filters), each block ending in a
2x2/2 max-pool and dropout (0.2, as tutorial 001's VGG16). The head is the tutorial's
CIFAR head: flatten - FC512 - dropout - FC512 - dropout - logits (instead of the
ImageNet FC4096 pair). Conv layers keep their bias, as in the tutorial.

Small inputs: pools use "same" padding, so the five halvings end at ceil(H/32) (1x1 for
both 32x32 and 28x28) instead of failing; any input size works.
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model

PAPER = "Simonyan & Zisserman 2015"
REFERENCE = "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015 (arXiv:1409.1556)"
DEFAULTS = {"dropout": 0.2, "weight_decay": 0.0}
HEAD_UNITS = 512

# Number of 3x3 convs in each of the five blocks, per configuration of the paper's Table 1.
CONV_COUNTS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
BLOCK_FILTERS = (64, 128, 256, 512, 512)


def build_vgg(name: str, input_shape, num_classes: int, *, dropout: float, weight_decay: float) -> keras.Model:
    """VGG-BN trunk ``CONV_COUNTS[name]`` with the tutorial's FC512-FC512 head."""
    inputs = blocks.image_input(input_shape)
    x = inputs
    for block, (count, filters) in enumerate(zip(CONV_COUNTS[name], BLOCK_FILTERS), start=1):
        for layer in range(1, count + 1):
            x = blocks.conv(x, filters, 3, weight_decay=weight_decay, name=f"block{block}_conv{layer}")
            x = blocks.bn_act(x, name=f"block{block}_conv{layer}")
        x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"block{block}_pool")(x)
        x = blocks.dropout(x, dropout, name=f"block{block}_dropout")
    x = keras.layers.Flatten(name="flatten")(x)
    for index in (1, 2):
        x = blocks.dense(x, HEAD_UNITS, weight_decay=weight_decay, name=f"fc{index}")
        x = blocks.dropout(x, dropout, name=f"fc{index}_dropout")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, name)


def _register(name: str, source: str):
    return register_model(name, family="vgg", paper=PAPER, reference=REFERENCE, source=source, defaults=DEFAULTS)


@_register("vgg11", source="000 (VGG blocks)")
def vgg11(input_shape, num_classes, **hparams):
    """VGG-11 (configuration A) with BN and the CIFAR head."""
    return build_vgg("vgg11", input_shape, num_classes, **hparams)


@_register("vgg13", source="000 (VGG blocks)")
def vgg13(input_shape, num_classes, **hparams):
    """VGG-13 (configuration B) with BN and the CIFAR head."""
    return build_vgg("vgg13", input_shape, num_classes, **hparams)


@_register("vgg16", source="001 (Keras VGG16 on CIFAR-10), 000 (76.4%)")
def vgg16(input_shape, num_classes, **hparams):
    """VGG-16 (configuration D) with BN and the CIFAR head, as tutorial 001."""
    return build_vgg("vgg16", input_shape, num_classes, **hparams)


@_register("vgg19", source="000 (VGG19 table)")
def vgg19(input_shape, num_classes, **hparams):
    """VGG-19 (configuration E) with BN and the CIFAR head."""
    return build_vgg("vgg19", input_shape, num_classes, **hparams)
