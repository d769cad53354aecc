"""Small layer helpers shared by the families (keras-hub style ``apply_*`` functions).

Each helper takes a tensor and a ``name`` prefix and returns a tensor; the layers it
creates get fixed, readable names derived from that prefix (``stage2_block1_conv1``),
so checkpoints, summaries and diagrams are stable and greppable.
"""
from __future__ import annotations

import keras

from components.models.registry import LOGITS_LAYER


def l2(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """L2 kernel regularizer (loss += weight_decay * sum(W**2)), or None when it is 0.

    Returning None for 0 keeps the model free of no-op regularization losses.
    """
    return keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def image_input(input_shape: tuple[int, int, int]) -> keras.KerasTensor:
    """The model input: one already-normalised float image of ``input_shape``."""
    return keras.Input(shape=input_shape, name="input")


def conv(
    x,
    filters: int,
    kernel_size: int | tuple[int, int],
    *,
    name: str,
    weight_decay: float,
    strides: int = 1,
    padding: str = "same",
    activation: str | None = None,
    use_bias: bool = True,
    dilation_rate: int = 1,
    kernel_initializer: str = "glorot_uniform",
):
    """A Conv2D layer named ``name`` with L2 ``weight_decay`` on its kernel."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        activation=activation,
        use_bias=use_bias,
        dilation_rate=dilation_rate,
        kernel_initializer=kernel_initializer,
        kernel_regularizer=l2(weight_decay),
        name=name,
    )(x)


def bn_act(x, *, name: str, activation: str | None = "relu"):
    """BatchNormalization (``{name}_bn``) then the activation (``{name}_{activation}``)."""
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int | tuple[int, int],
    *,
    name: str,
    weight_decay: float,
    strides: int = 1,
    padding: str = "same",
    activation: str | None = "relu",
    kernel_initializer: str = "glorot_uniform",
    use_bias: bool = False,
):
    """Conv (``{name}_conv``) -> BN (``{name}_bn``) -> activation.

    The conv has no bias by default: BN's beta makes it redundant. Families whose
    reference code keeps it (Keras tutorials using ``Conv2D`` defaults) pass ``use_bias=True``.
    """
    x = conv(
        x,
        filters,
        kernel_size,
        name=f"{name}_conv",
        weight_decay=weight_decay,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
    )
    return bn_act(x, name=name, activation=activation)


def dense(x, units: int, *, name: str, weight_decay: float, activation: str | None = "relu",
          kernel_initializer: str = "glorot_uniform"):
    """A Dense layer named ``name`` with L2 ``weight_decay`` on its kernel."""
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=kernel_initializer,
        kernel_regularizer=l2(weight_decay),
        name=name,
    )(x)


def dropout(x, rate: float, *, name: str):
    """Dropout named ``name``; skipped entirely at rate 0 so the graph shows no dead layer."""
    if rate == 0:
        return x
    return keras.layers.Dropout(rate, name=name)(x)


def logits(x, num_classes: int, *, weight_decay: float, kernel_initializer: str = "glorot_uniform"):
    """The classifier: a Dense layer named ``logits`` computed in float32.

    ``dtype="float32"`` makes the layer cast its input up and keep its weights and output
    in float32 under a ``mixed_float16`` policy, so softmax/cross-entropy stay stable.
    No softmax here: the loss takes logits.
    """
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer,
        kernel_regularizer=l2(weight_decay),
        dtype="float32",
        name=LOGITS_LAYER,
    )(x)


def functional_model(inputs, outputs, name: str) -> keras.Model:
    """Wrap the graph in a ``keras.Model`` named after the registry name."""
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
