"""The airbench network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU").

A stem of 24 2x2 convolutions (valid) with GELU, then three blocks of
conv 3x3 - 2x2/2 max-pool - BN - GELU - conv 3x3 - BN - GELU at ``widths`` filters
(64, 256, 256 in the paper), a global max-pool and a linear classifier on features
scaled by 1/9 (the paper's output temperature; scaling the classifier's input is the same
function and gradient as scaling its logits). Batch norm has no scale (gamma fixed at 1),
as in the paper: with BN after every conv, a scale adds nothing the next conv cannot learn.

Differences from the paper's training code, which this registry does not carry (it holds
architectures; recipes are params.yaml's): the stem is trained from the default
initialisation rather than set to the whitening of the training patches and frozen, and there
is no test-time augmentation inside the model.

``airbench`` is the paper's widths (1.97M parameters); ``airbench_small`` the same design at
(32, 48, 48) filters, 93,538 parameters on 28x28x1: a LeNet-5-sized model (61,706) for
Fashion-MNIST.

Small inputs: the stem's valid 2x2 conv takes 1 pixel, and each block halves (floor)
the plane: 32 -> 31 -> 15 -> 7 -> 3, 28 -> 27 -> 13 -> 6 -> 3. Any input of at least
9x9 keeps a plane of at least 1x1 after the third block (9 -> 8 -> 4 -> 2 -> 1).
"""
from __future__ import annotations

import keras

from components.models import blocks
from components.models.registry import ModelConfigError, register_model

PAPER = "Jordan 2024"
REFERENCE = "Keller Jordan, 94% on CIFAR-10 in 3.29 Seconds on a Single GPU, arXiv:2404.00498 (airbench94)"
SOURCE = "REFERENCES.md (speed records: airbench94); ours, for the 2-core CPU goals"
STEM_FILTERS = 24  # the paper's whitening layer: 2x2x3 patches -> 24 channels
OUTPUT_SCALE = 1 / 9  # the paper's `scaling_factor`
MIN_INPUT_SIZE = 9  # 9 -> 8 -> 4 -> 2 -> 1 (three blocks)


def _bn_gelu(x, name: str):
    # center only (the paper freezes BN's weight at 1): see the module docstring.
    x = keras.layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
    return keras.layers.Activation("gelu", name=f"{name}_gelu")(x)


def _block(x, filters: int, *, name: str, weight_decay: float):
    """conv - max-pool - BN - GELU - conv - BN - GELU (the pool before BN, as in the paper)."""
    x = blocks.conv(x, filters, 3, use_bias=False, weight_decay=weight_decay, name=f"{name}_conv1")
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = _bn_gelu(x, f"{name}_1")
    x = blocks.conv(x, filters, 3, use_bias=False, weight_decay=weight_decay, name=f"{name}_conv2")
    return _bn_gelu(x, f"{name}_2")


def _airbench(name: str, input_shape, num_classes, widths, weight_decay) -> keras.Model:
    if len(widths) != 3:  # MIN_INPUT_SIZE and the paper's design are for three blocks
        raise ModelConfigError(f"{name}: widths must list 3 blocks' filters, got {list(widths)}")
    inputs = blocks.image_input(input_shape)
    x = blocks.conv(inputs, STEM_FILTERS, 2, padding="valid", weight_decay=weight_decay, name="stem_conv")
    x = keras.layers.Activation("gelu", name="stem_gelu")(x)
    for index, filters in enumerate(widths, start=1):
        x = _block(x, filters, name=f"block{index}", weight_decay=weight_decay)
    x = keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = keras.layers.Rescaling(OUTPUT_SCALE, name="output_scale")(x)
    outputs = blocks.logits(x, num_classes, weight_decay=weight_decay)
    return blocks.functional_model(inputs, outputs, name)


@register_model("airbench", family="airbench", paper=PAPER, reference=REFERENCE, source=SOURCE,
                defaults={"widths": (64, 256, 256), "weight_decay": 0.0}, min_input_size=MIN_INPUT_SIZE)
def airbench(input_shape, num_classes, *, widths, weight_decay):
    """airbench94's network: stem 2x2 conv, 3 blocks of conv-pool-BN-GELU-conv-BN-GELU (64, 256, 256), max-pool."""
    return _airbench("airbench", input_shape, num_classes, widths, weight_decay)


@register_model("airbench_small", family="airbench", paper=PAPER, reference=REFERENCE, source=SOURCE,
                defaults={"widths": (32, 48, 48), "weight_decay": 0.0}, min_input_size=MIN_INPUT_SIZE)
def airbench_small(input_shape, num_classes, *, widths, weight_decay):
    """airbench's design at (32, 48, 48) filters: under 100k parameters, LeNet-5's size class."""
    return _airbench("airbench_small", input_shape, num_classes, widths, weight_decay)
