"""Normalisation as the model's first layer, so an exported model takes raw uint8 images.

The input pipeline hands the model pixels in 0-255 units (uint8, or float32 after
interpolating or colour augmentation). Normalisation happens exactly once, here:

* by default with the per-channel mean and standard deviation of the train split that
  the prepare stage recorded in ``prepare_info.json`` (``train_statistics``, 0-255 units);
* per image (``tf.image.per_image_standardization``) when the augment list includes
  ``standardize`` (the tutorials' way), in training and evaluation alike.

Either layer casts its input to float32 first and stores its constants in the model's
config, so a saved model carries its normalisation with it.
"""
from __future__ import annotations

import keras

from components.inputs.config import InputConfig
from components.inputs.policies import expand_policies


@keras.saving.register_keras_serializable(package="components.inputs")
class PerImageStandardization(keras.layers.Layer):
    """``(x - mean(x)) / max(std(x), 1/sqrt(N))`` per image, as ``tf.image.per_image_standardization``."""

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        mean = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(x, axis=(1, 2, 3), keepdims=True)
        elements = keras.ops.cast(keras.ops.prod(keras.ops.shape(x)[1:]), "float32")
        return (x - mean) / keras.ops.maximum(std, keras.ops.rsqrt(elements))

    def compute_output_shape(self, input_shape):
        return input_shape


def uses_per_image_standardization(config: InputConfig, channels: int) -> bool:
    """Whether ``config``'s augment list asks for per-image standardisation (op ``standardize``)."""
    return "standardize" in expand_policies(config.augment, channels)


def normalization_layer(info: dict, config: InputConfig | None = None, *,
                        name: str = "normalize") -> keras.layers.Layer:
    """The model's first layer: normalise raw 0-255 pixels (any dtype) to float32.

    ``info`` is the prepared data set's ``prepare_info.json`` (e.g. from
    :func:`components.inputs.check_prepared`). With ``config`` whose augment list
    includes ``standardize`` the layer standardises each image on its own; otherwise it
    uses the recorded train-split mean and std per channel.
    """
    channels = info["image_shape"][2]
    if config is not None and uses_per_image_standardization(config, channels):
        return PerImageStandardization(name=name, dtype="float32")
    stats = info["train_statistics"]
    return keras.layers.Normalization(axis=-1, mean=list(stats["mean"]), variance=[s * s for s in stats["std"]],
                                      name=name, dtype="float32")
