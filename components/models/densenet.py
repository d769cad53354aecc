"""Densely connected networks (Huang et al. 2017): DenseNet-BC-100 and the tutorial DenseNet.

Inside a dense block every layer receives the concatenation of all earlier feature maps
and adds ``growth_rate`` (k) new ones; transition layers between blocks compress the
channels (BN-ReLU-Conv1x1) and halve the spatial size (2x2 average pool).

``densenet_bc_100`` (tutorial 004, the paper's CIFAR model): depth L=100, k=12, three
dense blocks of 16 bottleneck layers BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k), compression
0.5, a 3x3 stem conv with 2k filters and a BN-ReLU-global-pool head; about 0.77M
parameters. ``dropout`` (default 0) adds the paper's 0.2 dropout after every conv, which
the paper and the Keras example use only when training without data augmentation.

``densenet`` (tutorial 000's DenseNet): plain BN-ReLU-Conv3x3(k) layers (no bottleneck),
k=32, blocks (6, 12, 24, 16), each transition halving the channels, after an ImageNet
style stem Conv7x7/2-BN-ReLU + MaxPool3x3/2 with 64 filters. The tutorial trained it on
CIFAR images resized to 96x96 and ended with a 3x3 average pool; here the head pools
globally, which is the same at 96x96 and also works at 28x28/32x32.

Small inputs: DenseNet-BC downsamples 4x (8x8 maps at 32, 7x7 at 28), so it needs
H, W >= 4. The tutorial DenseNet downsamples 32x: its pools use "same" padding so the
maps shrink to 1x1 instead of vanishing (32 -> 8 -> 4 -> 2 -> 1; 28 -> 7 -> 4 -> 2 -> 1).
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import register_model

PAPER = "Huang et al. 2017"
REFERENCE = "Huang, Liu, van der Maaten & Weinberger, Densely Connected Convolutional Networks, CVPR 2017 (arXiv:1608.06993)"
INIT = "he_normal"


def _bn_relu_conv(x, filters: int, kernel_size: int, *, name: str, weight_decay: float, dropout: float = 0.0):
    """DenseNet's composite function H: BN-ReLU-Conv (no conv bias), optional dropout."""
    x = blocks.bn_act(x, name=name)
    x = blocks.conv(x, filters, kernel_size, use_bias=False, kernel_initializer=INIT,
                    weight_decay=weight_decay, name=f"{name}_conv")
    return blocks.dropout(x, dropout, name=f"{name}_dropout")


def dense_block(x, num_layers: int, growth_rate: int, *, bottleneck: bool, name: str,
                weight_decay: float, dropout: float = 0.0):
    """``num_layers`` layers, each concatenating ``growth_rate`` new maps to its input."""
    for layer in range(1, num_layers + 1):
        prefix = f"{name}_layer{layer}"
        y = x
        if bottleneck:
            # 1x1 conv to 4k maps first, so the 3x3 conv never sees the full concatenation.
            y = _bn_relu_conv(y, 4 * growth_rate, 1, name=f"{prefix}_1x1", weight_decay=weight_decay, dropout=dropout)
        y = _bn_relu_conv(y, growth_rate, 3, name=f"{prefix}_3x3", weight_decay=weight_decay, dropout=dropout)
        x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_concat")([x, y])
    return x


def transition(x, filters: int, *, name: str, weight_decay: float, pool_padding: str, dropout: float = 0.0):
    """BN-ReLU-Conv1x1 to ``filters`` maps, then 2x2/2 average pooling."""
    x = _bn_relu_conv(x, filters, 1, name=name, weight_decay=weight_decay, dropout=dropout)
    return keras.layers.AveragePooling2D(2, strides=2, padding=pool_padding, name=f"{name}_pool")(x)


def _head(x, num_classes: int, weight_decay: float):
    x = blocks.bn_act(x, name="post")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return blocks.logits(x, num_classes, weight_decay=weight_decay)


@register_model(
    "densenet_bc_100",
    family="densenet",
    paper=PAPER,
    reference=REFERENCE,
    source="004 (Keras DenseNet-BC-100, 93.74%)",
    defaults={"compression": 0.5, "dropout": 0.0, "weight_decay": 1e-4},
    min_input_size=4,
)
def densenet_bc_100(input_shape, num_classes, *, compression, dropout, weight_decay):
    """DenseNet-BC (L=100, k=12): 3 blocks x 16 bottleneck layers, compression 0.5."""
    growth_rate, depth, num_blocks = 12, 100, 3
    layers_per_block = (depth - 4) // (2 * num_blocks)  # 2 convs per bottleneck layer
    inputs = blocks.image_input(input_shape)
    x = blocks.conv(inputs, 2 * growth_rate, 3, use_bias=False, kernel_initializer=INIT,
                    weight_decay=weight_decay, name="stem_conv")
    for block in range(1, num_blocks + 1):
        x = dense_block(x, layers_per_block, growth_rate, bottleneck=True, dropout=dropout,
                        weight_decay=weight_decay, name=f"block{block}")
        if block < num_blocks:
            x = transition(x, int(x.shape[-1] * compression), pool_padding="valid", dropout=dropout,
                           weight_decay=weight_decay, name=f"transition{block}")
    outputs = _head(x, num_classes, weight_decay)
    return blocks.functional_model(inputs, outputs, "densenet_bc_100")


@register_model(
    "densenet",
    family="densenet",
    paper=PAPER,
    reference=REFERENCE + "; tutorial 000's non-bottleneck variant",
    source="000 (DenseNet, 85.0%)",
    defaults={"growth_rate": 32, "block_layers": (6, 12, 24, 16), "weight_decay": 0.0},
)
def densenet(input_shape, num_classes, *, growth_rate, block_layers, weight_decay):
    """Tutorial DenseNet: 7x7/2 stem + pool, BN-ReLU-Conv3x3 dense blocks (6,12,24,16), k=32."""
    inputs = blocks.image_input(input_shape)
    x = blocks.conv_bn_act(inputs, 64, 7, strides=2, kernel_initializer=INIT,
                           weight_decay=weight_decay, name="stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for block, num_layers in enumerate(block_layers, start=1):
        x = dense_block(x, num_layers, growth_rate, bottleneck=False,
                        weight_decay=weight_decay, name=f"block{block}")
        if block < len(block_layers):
            x = transition(x, x.shape[-1] // 2, pool_padding="same",
                           weight_decay=weight_decay, name=f"transition{block}")
    outputs = _head(x, num_classes, weight_decay)
    return blocks.functional_model(inputs, outputs, "densenet")
