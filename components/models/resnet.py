"""Residual networks: every ResNet of the seed tutorials, in four flavours.

* ``resnet18``, ``resnet34`` (tutorial 001): basic blocks (two 3x3 Conv-BN, ReLU after
  the addition), widths 64-128-256-512, with the CIFAR stem of the tutorial (one 3x3
  Conv-BN-ReLU at stride 1, no max-pool) so 32x32 inputs are not reduced 4x up front;
  projection shortcuts (1x1 conv + BN) where the shape changes.
* ``resnet20/32/44/56/110`` (He et al. 2016 CIFAR nets, tutorial 004 "v1", depth 6n+2):
  3x3 Conv-BN-ReLU stem with 16 filters, three stages of n basic blocks with 16-32-64
  filters, global average pooling. Where the shape changes the shortcut is, by default,
  the paper's option A (``shortcut="identity"``: stride-2 subsampling plus zero-padded
  channels, parameter-free); ``shortcut="projection"`` uses a 1x1 conv + BN (option B;
  the Keras example of tutorial 004 uses a 1x1 conv too).
* ``resnet56v2/110v2/164v2`` (He et al. 2016 "Identity Mappings", tutorial 004 "v2",
  depth 9n+2): pre-activation bottleneck units BN-ReLU-Conv1x1-BN-ReLU-Conv3x3-BN-ReLU-
  Conv1x1 with the paper's widths 16-32-64 (outputs 64-128-256, expansion 4), a projection
  shortcut from the pre-activated input at the first unit of each stage, and a final
  BN-ReLU before pooling. (The Keras example of tutorial 004 widens the bottleneck of
  stages 2-3 to 64/128; this module follows the paper, which gives its 1.7M for 164v2.)
* ``resnet50v2/101v2/152v2/200v2`` (tutorial 003, slim ``resnet_v2``): the ImageNet
  pre-activation bottleneck nets, units (3,4,6,3) / (3,4,23,3) / (3,8,36,3) / (3,24,36,3),
  stride 2 on the *last* unit of blocks 1-3 and max-pool-1x1 subsampling on that unit's
  identity shortcut, exactly as slim.

Small inputs: all convs are "same"-padded and the head pools globally, so any size
works. The CIFAR nets and ResNet-18/34 never use the ImageNet 7x7/2 + max-pool stem; the
ImageNet nets choose their stem with ``stem``: ``"imagenet"`` (7x7/2 conv + 3x3/2
max-pool, as slim), ``"cifar"`` (3x3/1 conv, no pool), or ``"auto"`` (the default:
ImageNet stem only when H and W are both >= 128), so 28x28 and 32x32 images keep 4x4
maps at the last block instead of vanishing. He-normal initialisation throughout.

Precision. Every ResNet here is finite under ``float32``, ``mixed_bfloat16`` and, in
training mode, ``mixed_float16``. The deep ones, :data:`FLOAT16_UNSAFE` (resnet56,
resnet110, resnet110v2, resnet164v2, resnet101v2, resnet152v2, resnet200v2: 27 or more
residual units), need ``float32`` or ``mixed_bfloat16`` whenever they run in inference
mode (``training=False``: ``predict``, ``evaluate``, validation) before their BatchNorm
moving statistics have been learnt; under ``mixed_float16`` they give inf/NaN logits
there, on TensorFlow and JAX alike. The cause: BatchNormalization's moving statistics
start at mean 0 and variance 1, so in inference mode an untrained BN is the identity
(``x / sqrt(1 + 1e-3)``) and nothing in the net is normalised. With He-normal kernels each
Conv(-ReLU) keeps the second moment of its input, so every residual unit adds a branch
about as large as the stream it is added to: the stream's mean square about doubles per
unit (x1.7-2.4 measured; the zero padding of "same" convs takes a little off) and its
largest value grows about 1.4x per unit, to about 1e3 after 16-18 units
(resnet34, resnet50v2, resnet56v2), 1e4 after 21 (resnet44), 7e4-4e5 after 27 (resnet56)
and 2e5 (resnet110v2, 36 units) up to 7e9 (resnet200v2, 66 units), measured in float32 on
N(0, 1) 32x32x3 images, against float16's largest finite value 65504 (a conv or Add
output becomes inf, the logits NaN/inf). bfloat16 has float32's exponent range (max
3.4e38), so it stays finite; in training mode BN normalises with the batch's statistics
and no activation exceeds about 40. The moving statistics (momentum 0.99) catch up
within a few training steps: float16 inference was finite again after 1 step (resnet56),
5 (resnet110v2) and 20-50 (resnet200v2), so a trained model runs fine in float16; the
overflow hits inference before or early in training (an evaluation of the untrained net,
a smoke run of a few steps). Nothing in the float32 maths is wrong: the untrained net is
simply un-normalised in inference mode, and the architectural remedies (zero-initialising
the last layer of each residual branch, Goyal et al. 2017; Fixup-style scaling) change
float32 training too, so this module keeps the papers' nets and flags the dtype instead.
``tests/test_precision_models.py`` pins the finding.
"""
from __future__ import annotations

import keras
from keras import ops

from components.models import blocks
from components.models.registry import list_models, register_model

RESNET_PAPER = "He et al. 2016"
RESNET_REFERENCE = "He, Zhang, Ren & Sun, Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv:1512.03385)"
PREACT_PAPER = "He et al. 2016b"
PREACT_REFERENCE = "He, Zhang, Ren & Sun, Identity Mappings in Deep Residual Networks, ECCV 2016 (arXiv:1603.05027)"
INIT = "he_normal"  # the papers' (and Keras example's) initialisation for ReLU nets
IMAGENET_STEM_MIN_SIZE = 128  # "auto" stem: below this, a 4x stem would leave too little map


@keras.saving.register_keras_serializable(package="cnn_zoo")
class ZeroPadShortcut(keras.layers.Layer):
    """Option-A shortcut of He et al. 2016: subsample by striding, zero-pad new channels.

    Parameter-free, so a 6n+2 CIFAR ResNet has the paper's parameter count (0.27M for
    ResNet-20). The extra channels are split between both sides of the channel axis.
    """

    def __init__(self, out_channels: int, strides: int, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.strides = int(strides)

    def call(self, x):
        x = x[:, :: self.strides, :: self.strides, :]
        extra = self.out_channels - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        shrink = lambda size: None if size is None else -(-size // self.strides)  # noqa: E731 (ceil)
        return (batch, shrink(height), shrink(width), self.out_channels)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "strides": self.strides}


# --------------------------------------------------------------------------- layer helpers
def _conv(x, filters: int, kernel_size: int, *, name: str, weight_decay: float, strides: int = 1):
    return blocks.conv(
        x, filters, kernel_size, strides=strides, use_bias=False,
        kernel_initializer=INIT, weight_decay=weight_decay, name=name,
    )


def _bn(x, name: str):
    return keras.layers.BatchNormalization(name=name)(x)


def _relu(x, name: str):
    return keras.layers.Activation("relu", name=name)(x)


def _conv_bn(x, filters: int, kernel_size: int, *, name: str, index: int, weight_decay: float,
             strides: int = 1, relu: bool = True):
    """``{name}_conv{index}`` -> ``{name}_bn{index}`` [-> ``{name}_relu{index}``]."""
    x = _conv(x, filters, kernel_size, strides=strides, name=f"{name}_conv{index}", weight_decay=weight_decay)
    x = _bn(x, f"{name}_bn{index}")
    return _relu(x, f"{name}_relu{index}") if relu else x


# --------------------------------------------------------------------------- blocks
def basic_block(x, filters: int, *, strides: int, shortcut: str, name: str, weight_decay: float):
    """ResNet v1 basic block: Conv3x3-BN-ReLU-Conv3x3-BN, add shortcut, ReLU."""
    wd = weight_decay
    y = _conv_bn(x, filters, 3, strides=strides, name=name, index=1, weight_decay=wd)
    y = _conv_bn(y, filters, 3, name=name, index=2, weight_decay=wd, relu=False)
    if strides == 1 and x.shape[-1] == filters:
        residual = x
    elif shortcut == "identity":
        residual = ZeroPadShortcut(filters, strides, name=f"{name}_shortcut")(x)
    else:
        residual = _conv(x, filters, 1, strides=strides, name=f"{name}_shortcut_conv", weight_decay=wd)
        residual = _bn(residual, f"{name}_shortcut_bn")
    x = keras.layers.Add(name=f"{name}_add")([residual, y])
    return _relu(x, f"{name}_out")


def bottleneck_v2(x, width: int, out_filters: int, *, strides: int, name: str, weight_decay: float):
    """Pre-activation bottleneck: BN-ReLU, then 1x1 (width) - 3x3 (width, strided) - 1x1 (out).

    Shortcut: identity; max-pool 1x1 subsampling when only the size changes (slim);
    a 1x1 projection of the pre-activated input when the channels change (paper/slim).
    """
    wd = weight_decay
    preact = _relu(_bn(x, f"{name}_preact_bn"), f"{name}_preact_relu")
    if x.shape[-1] != out_filters:
        residual = _conv(preact, out_filters, 1, strides=strides, name=f"{name}_shortcut_conv", weight_decay=wd)
    elif strides > 1:
        residual = keras.layers.MaxPooling2D(1, strides=strides, padding="same", name=f"{name}_shortcut_pool")(x)
    else:
        residual = x
    y = _conv_bn(preact, width, 1, name=name, index=1, weight_decay=wd)
    y = _conv_bn(y, width, 3, strides=strides, name=name, index=2, weight_decay=wd)
    y = _conv(y, out_filters, 1, name=f"{name}_conv3", weight_decay=wd)  # no BN: the next unit pre-activates
    return keras.layers.Add(name=f"{name}_add")([residual, y])


def _classifier(x, num_classes: int, weight_decay: float):
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return blocks.logits(x, num_classes, weight_decay=weight_decay, kernel_initializer=INIT)


def _post_activation(x):
    # Pre-activation nets end with one more BN-ReLU, since every unit's output is un-normalised.
    return _relu(_bn(x, "post_bn"), "post_relu")


# --------------------------------------------------------------------------- builders
def build_basic_resnet(name, input_shape, num_classes, *, stage_blocks, stage_filters, shortcut, weight_decay):
    """Basic-block ResNet with a 3x3 stem: ResNet-18/34 and the 6n+2 CIFAR nets."""
    inputs = blocks.image_input(input_shape)
    x = _conv(inputs, stage_filters[0], 3, name="stem_conv", weight_decay=weight_decay)
    x = _relu(_bn(x, "stem_bn"), "stem_relu")
    for stage, (count, filters) in enumerate(zip(stage_blocks, stage_filters), start=1):
        for block in range(1, count + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = basic_block(x, filters, strides=strides, shortcut=shortcut,
                            weight_decay=weight_decay, name=f"stage{stage}_block{block}")
    outputs = _classifier(x, num_classes, weight_decay)
    return blocks.functional_model(inputs, outputs, name)


def build_preact_cifar(name, input_shape, num_classes, *, depth, weight_decay):
    """9n+2 pre-activation bottleneck ResNet for CIFAR (widths 16-32-64, expansion 4)."""
    units = (depth - 2) // 9
    inputs = blocks.image_input(input_shape)
    x = _conv(inputs, 16, 3, name="stem_conv", weight_decay=weight_decay)
    for stage, width in enumerate((16, 32, 64), start=1):
        for block in range(1, units + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = bottleneck_v2(x, width, 4 * width, strides=strides, weight_decay=weight_decay,
                              name=f"stage{stage}_block{block}")
    outputs = _classifier(_post_activation(x), num_classes, weight_decay)
    return blocks.functional_model(inputs, outputs, name)


def _stem_v2(inputs, stem: str, weight_decay: float):
    height, width = inputs.shape[1], inputs.shape[2]
    if stem == "auto":
        stem = "imagenet" if min(height, width) >= IMAGENET_STEM_MIN_SIZE else "cifar"
    if stem == "imagenet":
        x = _conv(inputs, 64, 7, strides=2, name="stem_conv", weight_decay=weight_decay)
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    return _conv(inputs, 64, 3, name="stem_conv", weight_decay=weight_decay)


def build_preact_imagenet(name, input_shape, num_classes, *, units, stem, weight_decay):
    """slim ``resnet_v2``: four blocks of bottlenecks, stride 2 on the last unit of blocks 1-3."""
    inputs = blocks.image_input(input_shape)
    x = _stem_v2(inputs, stem, weight_decay)
    for stage, (count, width) in enumerate(zip(units, (64, 128, 256, 512)), start=1):
        for block in range(1, count + 1):
            strides = 2 if block == count and stage < 4 else 1
            x = bottleneck_v2(x, width, 4 * width, strides=strides, weight_decay=weight_decay,
                              name=f"stage{stage}_block{block}")
    outputs = _classifier(_post_activation(x), num_classes, weight_decay)
    return blocks.functional_model(inputs, outputs, name)


# --------------------------------------------------------------------------- registry
# Variants are registered in loops (timm registers one function per name; here the
# bodies would be identical). The docstring is set before registering, because the
# registry reads its first line as the model's description.
# L2 1e-4 on every kernel: the Keras example of tutorial 004 (l2(1e-4)) and slim's
# resnet_arg_scope of tutorial 003 (weight_decay=0.0001).
_RESNET_DEFAULTS = {"weight_decay": 1e-4}


# --------------------------------------------------------------------------- precision
FLOAT16_MAX = 65504.0  # the largest finite float16

#: Models whose activations overflow float16 at initialisation in inference mode (see the
#: module docstring): the trainer should refuse ``mixed_float16`` for them, citing
#: :data:`FLOAT16_UNSAFE_REASON`. float32 and ``mixed_bfloat16`` are safe for every model.
FLOAT16_UNSAFE: frozenset[str] = frozenset({
    "resnet56", "resnet110",  # v1, 27 and 54 residual units
    "resnet110v2", "resnet164v2",  # CIFAR v2, 36 and 54 units
    "resnet101v2", "resnet152v2", "resnet200v2",  # ImageNet v2, 33, 50 and 66 units
})

FLOAT16_UNSAFE_REASON = (
    "float16 overflows (inf/NaN logits) in inference mode until BatchNorm's moving statistics are "
    "learnt (untrained, up to ~50 steps): they start at mean 0 / variance 1, so nothing is normalised "
    "and the residual stream's variance about doubles per residual unit (He init), passing float16's max "
    "65504; use float32 or mixed_bfloat16"
)

_PRECISION_DOC = (
    "\n\nPrecision: float32 or mixed_bfloat16. mixed_float16 is unsafe (``FLOAT16_UNSAFE``): "
    + FLOAT16_UNSAFE_REASON + "."
)


def _register(name: str, builder, doc: str, **metadata) -> None:
    builder.__name__ = builder.__qualname__ = name
    # The first line stays the registry's one-line description.
    builder.__doc__ = doc + (_PRECISION_DOC if name in FLOAT16_UNSAFE else "")
    register_model(name, family="resnet", **metadata)(builder)


def _register_basic(name: str, stage_blocks: tuple[int, ...], source: str) -> None:
    def builder(input_shape, num_classes, *, weight_decay):
        return build_basic_resnet(name, input_shape, num_classes, stage_blocks=stage_blocks,
                                  stage_filters=(64, 128, 256, 512), shortcut="projection",
                                  weight_decay=weight_decay)

    doc = f"ResNet-{2 * sum(stage_blocks) + 2}: basic blocks {stage_blocks}, widths 64-512, 3x3 stem."
    _register(name, builder, doc,
              paper=RESNET_PAPER, reference=RESNET_REFERENCE, source=source, defaults=_RESNET_DEFAULTS)


def _register_cifar_v1(depth: int) -> None:
    n = (depth - 2) // 6

    def builder(input_shape, num_classes, *, shortcut, weight_decay):
        return build_basic_resnet(f"resnet{depth}", input_shape, num_classes, stage_blocks=(n, n, n),
                                  stage_filters=(16, 32, 64), shortcut=shortcut, weight_decay=weight_decay)

    _register(f"resnet{depth}", builder, f"ResNet-{depth} for CIFAR (6n+2, n={n}): basic blocks, 16-32-64 filters.",
              paper=RESNET_PAPER, reference=RESNET_REFERENCE, source="004 (Keras ResNet v1, 6n+2)",
              defaults={"shortcut": "identity", **_RESNET_DEFAULTS})


def _register_cifar_v2(depth: int) -> None:
    def builder(input_shape, num_classes, *, weight_decay):
        return build_preact_cifar(f"resnet{depth}v2", input_shape, num_classes, depth=depth, weight_decay=weight_decay)

    _register(f"resnet{depth}v2", builder,
              f"Pre-activation ResNet-{depth} for CIFAR (9n+2, n={(depth - 2) // 9}): bottlenecks 16-32-64, x4 out.",
              paper=PREACT_PAPER, reference=PREACT_REFERENCE, source="004 (Keras ResNet v2, 9n+2)",
              defaults=_RESNET_DEFAULTS)


def _register_imagenet_v2(depth: int, units: tuple[int, int, int, int]) -> None:
    def builder(input_shape, num_classes, *, stem, weight_decay):
        return build_preact_imagenet(f"resnet{depth}v2", input_shape, num_classes, units=units, stem=stem,
                                     weight_decay=weight_decay)

    doc = f"Pre-activation ResNet-{depth} (slim resnet_v2_{depth}): bottleneck units {units}."
    _register(f"resnet{depth}v2", builder, doc,
              paper=PREACT_PAPER, reference=PREACT_REFERENCE, source="003 (slim resnet_v2)",
              defaults={"stem": "auto", **_RESNET_DEFAULTS})


_register_basic("resnet18", (2, 2, 2, 2), source="001 (Keras ResNet18 on CIFAR-10)")
_register_basic("resnet34", (3, 4, 6, 3), source="001 (ResNet18 recipe, paper's 34-layer depths)")
for _depth in (20, 32, 44, 56, 110):
    _register_cifar_v1(_depth)
for _depth in (56, 110, 164):
    _register_cifar_v2(_depth)
for _depth, _units in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3)), (200, (3, 24, 36, 3))):
    _register_imagenet_v2(_depth, _units)

# A typo in FLOAT16_UNSAFE would silently let a model through the trainer's check.
if FLOAT16_UNSAFE - set(list_models("resnet")):
    raise AssertionError(f"FLOAT16_UNSAFE names unregistered models: {sorted(FLOAT16_UNSAFE - set(list_models()))}")
