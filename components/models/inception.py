"""Inception networks: GoogLeNet (Inception-v1) of tutorial 000 and Inception10 of tutorial 001.

An Inception module runs four branches on the same input and concatenates them along
channels: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1. Every conv is
Conv-BN-ReLU (the tutorials add BN; the 2014 paper predates it).

``googlenet`` keeps the paper's nine modules (3a-5b) and channel table, with the seed's
small-image stem (conv64 5x5/2, conv64 1x1, conv192 3x3, max-pool 3/2) instead of the
7x7/2 + two pools ImageNet stem, global average pooling, dropout 0.4 and one linear
classifier. The auxiliary classifiers are left out (they only matter for the ImageNet
training recipe). The seed's typos in the module table (5b: 182 instead of 192; 4d: 24
instead of 32 5x5-reduce filters) are corrected to the paper's values.

``inception10`` is the tutorial's 10-layer net: Conv-BN-ReLU 16 3x3, then two blocks of
two modules (the first with stride 2), each branch having ``base_filters`` (16, then 32)
filters, global average pooling and the classifier.

Small inputs: all convs/pools use "same" padding and the head pools globally, so any
size works; GoogLeNet downsamples 16x (2x2 maps at 32, 2x2 at 28 before the pool).
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model

GOOGLENET_PAPER = "Szegedy et al. 2015"
GOOGLENET_REFERENCE = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (arXiv:1409.4842)"

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per module, Table 1 of the paper.
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = ("3b", "4e")  # max-pool 3/2 between the module groups


def inception_module(x, filters, *, name: str, weight_decay: float, strides: int = 1, use_bias: bool = False):
    """Four-branch Inception module; ``filters`` = (1x1, 3x3r, 3x3, 5x5r, 5x5, pool proj).

    ``strides`` > 1 is applied by the first conv of every branch (Inception10's
    downsampling modules); the pool branch then pools at stride 1 first, as the tutorial.
    """
    f1, f3r, f3, f5r, f5, fpool = filters
    cba = dict(weight_decay=weight_decay, use_bias=use_bias)
    b1 = blocks.conv_bn_act(x, f1, 1, strides=strides, name=f"{name}_branch1_1x1", **cba)
    b2 = blocks.conv_bn_act(x, f3r, 1, strides=strides, name=f"{name}_branch2_1x1", **cba)
    b2 = blocks.conv_bn_act(b2, f3, 3, name=f"{name}_branch2_3x3", **cba)
    b3 = blocks.conv_bn_act(x, f5r, 1, strides=strides, name=f"{name}_branch3_1x1", **cba)
    b3 = blocks.conv_bn_act(b3, f5, 5, name=f"{name}_branch3_5x5", **cba)
    b4 = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_branch4_pool")(x)
    b4 = blocks.conv_bn_act(b4, fpool, 1, strides=strides, name=f"{name}_branch4_1x1", **cba)
    return keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([b1, b2, b3, b4])


@register_model(
    "googlenet",
    family="inception",
    paper=GOOGLENET_PAPER,
    reference=GOOGLENET_REFERENCE,
    source="000 (GoogLeNet, 78.4%)",
    defaults={"dropout": 0.4, "weight_decay": 0.0},
)
def googlenet(input_shape, num_classes, *, dropout, weight_decay):
    """GoogLeNet / Inception-v1 with BN, small-image stem, modules 3a-5b, GAP head."""
    inputs = blocks.image_input(input_shape)
    x = blocks.conv_bn_act(inputs, 64, 5, strides=2, weight_decay=weight_decay, name="stem_conv1")
    x = blocks.conv_bn_act(x, 64, 1, weight_decay=weight_decay, name="stem_conv2")
    x = blocks.conv_bn_act(x, 192, 3, weight_decay=weight_decay, name="stem_conv3")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for module, filters in GOOGLENET_MODULES.items():
        x = inception_module(x, filters, weight_decay=weight_decay, name=f"inception{module}")
        if module in POOL_AFTER:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{module[0]}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = blocks.dropout(x, dropout, name="head_dropout")
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "googlenet")


@register_model(
    "inception10",
    family="inception",
    paper=GOOGLENET_PAPER,
    reference=GOOGLENET_REFERENCE + "; 10-layer teaching version of tutorial 001",
    source="001 (Keras Inception10 on CIFAR-10)",
    defaults={"base_filters": 16, "weight_decay": 0.0},
)
def inception10(input_shape, num_classes, *, base_filters, weight_decay):
    """Inception10: Conv-BN-ReLU then 2 blocks x 2 uniform-width Inception modules, GAP."""
    inputs = blocks.image_input(input_shape)
    # The tutorial's ConvBNRelu uses Conv2D's default bias; kept for parameter fidelity.
    x = blocks.conv_bn_act(inputs, base_filters, 3, weight_decay=weight_decay, use_bias=True, name="stem")
    filters = base_filters
    for block in (1, 2):
        for module in (1, 2):
            x = inception_module(
                x,
                (filters,) * 6,
                strides=2 if module == 1 else 1,
                weight_decay=weight_decay,
                use_bias=True,
                name=f"block{block}_inception{module}",
            )
        filters *= 2  # double the width after each block, as the feature map halves
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, "inception10")
