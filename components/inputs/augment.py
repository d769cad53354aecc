"""Augmentation as batched tensor ops: every op works on a whole batch ``[n, H, W, C]`` at once.

Each call takes one seed per batch (a stateless seed, shape [2] int64). Random values
are drawn with stateless ops from that seed folded with the op's fixed id, so the same
seed gives the same batch on any machine, in any order the batches are computed, and
switching one op on or off leaves the draws of the others unchanged.

Drawing and applying are separate steps. The draws (a few numbers per image) use
ordinary TensorFlow ops; applying them is pure tensor arithmetic that XLA compiles into
a handful of fused loops (``xla=True``), several times faster on CPU than the same ops
run one kernel at a time (pad-crop-flip of a 256-image CIFAR batch: ~0.8 ms with XLA,
~5 ms without). Both paths give identical uint8 results.

Pixel values stay in 0-255 units: the pipeline never normalises (the model's first
layer does, see :mod:`components.inputs.normalization`). Integer geometry, flips and
cutout keep uint8; interpolating geometry, colour jitter and mixup produce float32
(clipped to [0, 255] by the colour ops). Labels are only changed by mixup, which mixes
one-hot labels with the same weights as the images, so each row still sums to one.
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from components.inputs.config import AugmentParams
from components.inputs.policies import OPS, output_is_uint8

_ALG = "philox"  # named, not "auto_select": the XLA and the plain path must draw the same numbers


def _key(seed: tf.Tensor, op: str) -> tf.Tensor:
    """The stateless seed of one op in one batch: the batch seed folded with the op's id."""
    return tf.random.experimental.stateless_fold_in(seed, OPS.index(op), alg=_ALG)


def _uniform(shape, key, low, high, dtype=tf.float32) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, key, minval=low, maxval=high, dtype=dtype, alg=_ALG)


def _bernoulli(n, key, probability: float) -> tf.Tensor:
    return _uniform([n], key, 0.0, 1.0) < probability


def sample_draws(ops: Sequence[str], params: AugmentParams, seed: tf.Tensor, batch_size: tf.Tensor,
                 image_shape: Sequence[int]) -> dict[str, tf.Tensor]:
    """The random values the ops in ``ops`` need for one batch of ``batch_size`` images."""
    n = batch_size
    height, width = image_shape[:2]
    draws: dict[str, tf.Tensor] = {}
    ops = set(ops)
    if ops & {"random_crop", "random_shift"}:
        # Crop and shift are both integer translations: their offsets add up and run as one gather.
        dy = tf.zeros([n], tf.int32)
        dx = tf.zeros([n], tf.int32)
        for op, reach in (("random_crop", params.crop_padding), ("random_shift", params.max_shift)):
            if op in ops:
                yx = _uniform([2, n], _key(seed, op), -reach, reach + 1, tf.int32)
                dy, dx = dy + yx[0], dx + yx[1]
        draws["shift_y"], draws["shift_x"] = dy, dx
    if "flip_horizontal" in ops:
        draws["flip_h"] = _bernoulli(n, _key(seed, "flip_horizontal"), params.flip_probability)
    if "flip_vertical" in ops:
        draws["flip_v"] = _bernoulli(n, _key(seed, "flip_vertical"), params.flip_probability)
    if "random_scale" in ops:
        draws["scale"] = _uniform([n], _key(seed, "random_scale"), params.scale_min, params.scale_max)
    if "rotation" in ops:
        limit = math.radians(params.rotation_degrees)
        draws["angle"] = _uniform([n], _key(seed, "rotation"), -limit, limit)
    if "brightness" in ops:
        draws["brightness"] = _uniform([n], _key(seed, "brightness"), -params.brightness, params.brightness) * 255.0
    if "contrast" in ops:
        draws["contrast"] = _uniform([n], _key(seed, "contrast"), 1 - params.contrast, 1 + params.contrast)
    if "saturation" in ops:
        draws["saturation"] = _uniform([n], _key(seed, "saturation"), 1 - params.saturation, 1 + params.saturation)
    if "hue" in ops:
        draws["hue"] = _uniform([n], _key(seed, "hue"), -params.hue, params.hue)
    if "cutout" in ops:
        key = _key(seed, "cutout")
        keys = tf.random.experimental.stateless_split(key, 3, alg=_ALG)
        draws["cutout_y"] = _uniform([n], keys[0], 0, height, tf.int32)
        draws["cutout_x"] = _uniform([n], keys[1], 0, width, tf.int32)
        draws["cutout_on"] = _bernoulli(n, keys[2], params.cutout_probability)
    if "mixup" in ops:
        keys = tf.random.experimental.stateless_split(_key(seed, "mixup"), 3, alg=_ALG)
        # Beta(a, a) as G1 / (G1 + G2) with G ~ Gamma(a); stateless_gamma has no XLA kernel,
        # one reason drawing happens outside the compiled part.
        g1 = tf.random.stateless_gamma([n], keys[0], alpha=params.mixup_alpha)
        g2 = tf.random.stateless_gamma([n], keys[1], alpha=params.mixup_alpha)
        total = g1 + g2
        draws["mix_weight"] = tf.where(total > 0, g1 / tf.maximum(total, 1e-30), 1.0)
        draws["mix_partner"] = tf.argsort(_uniform([n], keys[2], 0.0, 1.0))  # a random permutation
    return draws


def translate_flip(images: tf.Tensor, shift_y: tf.Tensor | None = None, shift_x: tf.Tensor | None = None,
                   flip_h: tf.Tensor | None = None, flip_v: tf.Tensor | None = None) -> tf.Tensor:
    """Shift each image by whole pixels (zero fill) and mirror it, in one gather; dtype kept.

    ``shift_y/shift_x``: [n] int32 px (positive moves content up/left, i.e. the crop
    window down/right); ``flip_h/flip_v``: [n] bool. Equivalent to padding by the
    largest shift and cropping at a random offset, without materialising the padded batch.
    """
    height, width = images.shape[1:3]
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    if flip_v is not None:
        rows = tf.where(flip_v[:, None, None], height - 1 - rows, rows)
    if flip_h is not None:
        cols = tf.where(flip_h[:, None, None], width - 1 - cols, cols)
    if shift_y is not None:
        rows = rows + shift_y[:, None, None]
        cols = cols + shift_x[:, None, None]
    return _gather_pixels(images, rows, cols)


def _gather_pixels(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """``out[b, i, j] = images[b, rows[b, i, j], cols[b, i, j]]``, zero where out of bounds.

    ``rows`` and ``cols`` are int32 and broadcast to [n, H, W]. One flat gather of whole
    pixels from the batch with one extra zero pixel at the end for every miss.
    """
    n = tf.shape(images)[0]
    height, width, channels = images.shape[1:]
    valid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    base = tf.range(n)[:, None, None] * (height * width)
    index = tf.where(valid, base + rows * width + cols, n * height * width)
    flat = tf.concat([tf.reshape(images, [-1, channels]), tf.zeros([1, channels], images.dtype)], axis=0)
    out = tf.gather(flat, tf.reshape(index, [-1]))
    return tf.reshape(out, [n, height, width, channels])


def scale_rotate(images: tf.Tensor, scale: tf.Tensor | None = None, angle: tf.Tensor | None = None) -> tf.Tensor:
    """Zoom by ``scale`` ([n], > 1 zooms in) and rotate by ``angle`` ([n] radians) about the centre.

    Bilinear interpolation, zero fill outside the source image; float32 in and out.
    """
    n = tf.shape(images)[0]
    height, width = images.shape[1:3]
    inverse_scale = 1.0 / scale if scale is not None else tf.ones([n])
    angle = angle if angle is not None else tf.zeros([n])
    cos = (tf.cos(angle) * inverse_scale)[:, None, None]
    sin = (tf.sin(angle) * inverse_scale)[:, None, None]
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    y = tf.range(height, dtype=tf.float32)[None, :, None] - centre_y
    x = tf.range(width, dtype=tf.float32)[None, None, :] - centre_x
    # Where each output pixel comes from: the inverse rotation and zoom of its position.
    source_x = cos * x + sin * y + centre_x
    source_y = -sin * x + cos * y + centre_y
    x0, y0 = tf.floor(source_x), tf.floor(source_y)
    wx, wy = (source_x - x0)[..., None], (source_y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    top = _gather_pixels(images, y0, x0) * (1 - wx) + _gather_pixels(images, y0, x0 + 1) * wx
    bottom = _gather_pixels(images, y0 + 1, x0) * (1 - wx) + _gather_pixels(images, y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def adjust_brightness(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    """Add ``delta`` ([n], 0-255 units) to every pixel; clipped to [0, 255]."""
    return tf.clip_by_value(images + delta[:, None, None, None], 0.0, 255.0)


def adjust_contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Scale each pixel's distance from its image's per-channel mean by ``factor`` ([n]), as tf.image does."""
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * factor[:, None, None, None] + mean, 0.0, 255.0)


def adjust_saturation_hue(images: tf.Tensor, saturation: tf.Tensor | None = None,
                          hue: tf.Tensor | None = None) -> tf.Tensor:
    """Scale HSV saturation by ``saturation`` and rotate hue by ``hue`` (fraction of a turn), per image.

    One RGB->HSV->RGB round trip for both. 3-channel float32 images in 0-255 units;
    matches ``tf.image.adjust_saturation`` / ``adjust_hue`` to float rounding.
    """
    h, s, v = rgb_to_hsv(images / 255.0)
    if hue is not None:
        h = h + hue[:, None, None]  # hsv_to_rgb wraps hue itself
    if saturation is not None:
        s = tf.clip_by_value(s * saturation[:, None, None], 0.0, 1.0)
    return tf.clip_by_value(hsv_to_rgb(h, s, v) * 255.0, 0.0, 255.0)


def rgb_to_hsv(rgb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Hue (turns, [0, 1)), saturation and value of RGB in [0, 1]; continuous at the sector borders.

    Not ``tf.image.rgb_to_hsv``: its XLA lowering picks the hue sector by float equality
    with the channel maximum, which fails once XLA fuses and recomputes the inputs (CIFAR
    pixels turned purple after rotation + hue). Here the sector comes from ``argmax``,
    and the three sector formulas agree where two channels tie, so a near-tie picking
    either sector gives the same hue.
    """
    r, g, b = tf.unstack(rgb, axis=-1)
    value = tf.reduce_max(rgb, axis=-1)
    chroma = value - tf.reduce_min(rgb, axis=-1)
    safe = tf.where(chroma > 0, chroma, 1.0)
    sector = tf.argmax(rgb, axis=-1, output_type=tf.int32)
    hue = tf.where(sector == 0, tf.math.floormod((g - b) / safe, 6.0),
                   tf.where(sector == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = tf.where(chroma > 0, hue / 6.0, 0.0)
    saturation = tf.where(value > 0, chroma / tf.where(value > 0, value, 1.0), 0.0)
    return hue, saturation, value


def hsv_to_rgb(hue: tf.Tensor, saturation: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 1] from hue (turns, any real; wraps), saturation and value; branch-free.

    Channel n in (r: 5, g: 3, b: 1) is ``v - v s clip(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6``, the standard closed form.
    """
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = tf.math.floormod(n + hue * 6.0, 6.0)
        channels.append(value - value * saturation * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0))
    return tf.stack(channels, axis=-1)


def cutout(images: tf.Tensor, centre_y: tf.Tensor, centre_x: tf.Tensor, active: tf.Tensor, size: int,
           fill: Sequence[float]) -> tf.Tensor:
    """Fill a ``size`` x ``size`` square centred at (centre_y, centre_x) with ``fill`` (per channel).

    The square is clipped at the border, as in DeVries & Taylor (2017), so it may be
    smaller at the edges. ``active`` ([n] bool) picks the images it applies to. dtype kept.
    """
    height, width = images.shape[1:3]
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    half = size // 2
    top, left = centre_y[:, None, None] - half, centre_x[:, None, None] - half
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size) & active[:, None, None]
    fill = tf.cast(tf.constant(fill, tf.float32), images.dtype)
    return tf.where(inside[..., None], fill, images)


def mixup(images: tf.Tensor, labels: tf.Tensor, weight: tf.Tensor, partner: tf.Tensor):
    """Blend each image and its one-hot label with those of ``partner`` ([n] indices), weight ``weight`` ([n]).

    ``labels`` are float one-hot rows; the mixed rows still sum to one.
    """
    image_weight = weight[:, None, None, None]
    images = image_weight * images + (1 - image_weight) * tf.gather(images, partner)
    labels = weight[:, None] * labels + (1 - weight[:, None]) * tf.gather(labels, partner)
    return images, labels


def apply_draws(images: tf.Tensor, labels: tf.Tensor, draws: dict[str, tf.Tensor], ops: Sequence[str],
                params: AugmentParams, fill: Sequence[float], num_classes: int, one_hot: bool):
    """Apply ``ops`` (in run order) to a batch with the given draws. Pure tensor ops (XLA-compilable).

    Returns images (uint8 when every op keeps uint8, else float32 in 0-255) and labels
    (int64 class ids, or float32 one-hot rows when ``one_hot``; mixup needs one-hot).
    """
    ops = set(ops)
    if one_hot:
        labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if {"shift_y", "flip_h", "flip_v"} & set(draws):
        images = translate_flip(images, draws.get("shift_y"), draws.get("shift_x"),
                                draws.get("flip_h"), draws.get("flip_v"))
    if not output_is_uint8(ops):
        images = tf.cast(images, tf.float32)
    if "scale" in draws or "angle" in draws:
        images = scale_rotate(images, draws.get("scale"), draws.get("angle"))
    if "brightness" in draws:
        images = adjust_brightness(images, draws["brightness"])
    if "contrast" in draws:
        images = adjust_contrast(images, draws["contrast"])
    if "saturation" in draws or "hue" in draws:
        images = adjust_saturation_hue(images, draws.get("saturation"), draws.get("hue"))
    if "cutout" in ops:
        size = params.cutout_size or max(1, min(images.shape[1:3]) // 2)
        images = cutout(images, draws["cutout_y"], draws["cutout_x"], draws["cutout_on"], size, fill)
    if "mixup" in ops:
        images, labels = mixup(images, labels, draws["mix_weight"], draws["mix_partner"])
    return images, labels


class Augmenter:
    """A configured augmentation: ``augmenter(images, labels, seed) -> (images, labels)`` for one batch.

    ``ops``: expanded op names (see :func:`components.inputs.policies.expand_policies`);
    ``fill``: the per-channel value cutout erases with (the data set mean, 0-255 units,
    so an erased patch normalises to zero as in the paper); ``xla``: compile the apply
    step with XLA.
    """

    def __init__(self, ops: Sequence[str], params: AugmentParams, image_shape: Sequence[int], num_classes: int,
                 fill: Sequence[float], one_hot: bool, xla: bool = True):
        if "mixup" in ops and not one_hot:
            raise ValueError("mixup mixes labels, so it needs one-hot labels (labels: auto or one_hot)")
        if image_shape[2] == 1 and {"saturation", "hue"} & set(ops):
            raise ValueError("saturation and hue need 3-channel (RGB) images")
        self.ops = tuple(ops)
        self.params = params
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.output_uint8 = output_is_uint8(ops)
        self.fill = tuple(float(round(v)) for v in fill) if self.output_uint8 else tuple(float(v) for v in fill)
        self.one_hot = one_hot

        def apply(images, labels, draws):
            return apply_draws(images, labels, draws, self.ops, self.params, self.fill, self.num_classes,
                               self.one_hot)

        self._apply = tf.function(apply, jit_compile=True) if xla else apply

    def __call__(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor):
        draws = sample_draws(self.ops, self.params, seed, tf.shape(images)[0], self.image_shape)
        return self._apply(images, labels, draws)
