"""Batches drawn and augmented on the device, on any Keras backend (TensorFlow or JAX).

The whole split lives in device memory as uint8 (CIFAR-10 train: 138 MB), converted
once with ``keras.ops.convert_to_tensor`` (on JAX that places it on the default device,
the GPU when there is one). Each batch is an ``ops.take`` of a host-computed index
vector followed by the augmentation, both in one compiled function
(:func:`components.backend.compile_function`: ``jax.jit`` or XLA ``tf.function``), so
per step only a few kilobytes go to the device (indices and draws) and no pixel crosses
the host-device link.

Why the random numbers are drawn on the host with NumPy and only applied on the device:

* stateless and reproducible: each batch's draws come from a Philox generator keyed by
  (seed, epoch, step), so batch ``i`` is a pure function of ``i`` -- the same on every
  run on the same backend, in any order Keras asks for batches, and a run resumed at
  epoch ``e`` sees exactly what the uninterrupted run saw from epoch ``e`` on. No RNG
  state lives in the compiled function, so nothing needs checkpointing;
* cheap to ship: a few numbers per image (offsets, flags, angles, factors): with the
  index vector ~3 KB for a 256-image CIFAR batch with the standard policy, ~14 KB with
  every op on, next to the batch's 786 KB of pixels, which stay on the device;
* the pixel work (gathers, interpolation, colour maths) is where the time goes, and it
  runs on the device, fused by XLA into a few loops.

The draws use the same names and meaning as :func:`components.inputs.augment.sample_draws`
(mixup's partners excepted: a roll of the batch, see :func:`mixup`), and
:func:`apply_draws` here has the semantics of :func:`components.inputs.augment.apply_draws`
(tests check them against each other with identical draws); only the random streams
differ (NumPy's Philox here, TensorFlow's stateless ops there), so the images are not
bit-identical to the tf.data pipeline's. Ops run in :data:`components.inputs.policies.OPS`
order; ``standardize`` is skipped (the model's first layer does it). Integer geometry,
flips and cutout keep uint8; interpolating geometry, colour ops and mixup give float32
in 0-255 units, the colour ops clipped to [0, 255].

Two ``keras.ops.image`` functions are not used, on purpose: ``affine_transform`` has no
XLA kernel on TensorFlow (``ImageProjectiveTransformV3``) and costs ~45 ms per CIFAR
batch on JAX-CPU, so scale and rotation are the same bilinear gather as augment.py's;
``rgb_to_hsv`` picks the hue sector by float equality with the channel maximum on both
backends, which breaks when XLA fuses and recomputes its inputs (see augment.py), so
the sector comes from comparisons that make ``argmax``'s choice, as augment.py does.

On TensorFlow, Keras feeds a PyDataset through ``tf.data.Dataset.from_generator``, so
each batch makes a host round trip there; the gain on that backend is the compiled
augmentation, the big one (no host pipeline at all) is on JAX.
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import keras
import numpy as np
from keras import ops

from components.backend import compile_function, current_backend
from components.inputs.config import AugmentParams
from components.inputs.policies import OPS, output_is_uint8

# Op names DeviceAugmenter applies: every op but standardize (the model's first layer).
DEVICE_OPS = tuple(op for op in OPS if op != "standardize")


# ---------------------------------------------------------------------------------------
# Seeds


def derive_key(seed: int, *parts) -> np.ndarray:
    """A 128-bit Philox key for ``(seed, *parts)``, e.g. ``(seed, "records", epoch)``.

    sha256 of the parts joined with "/", as ``_derive_seed`` in dataset.py does for
    tf.data, so every purpose, epoch and step gets an unrelated stream.
    """
    digest = hashlib.sha256("/".join(str(part) for part in (seed, *parts)).encode()).digest()
    return np.frombuffer(digest[:16], "<u8").copy()


def generator(seed: int, *parts) -> np.random.Generator:
    """A NumPy generator on the Philox stream of ``(seed, *parts)``."""
    return np.random.Generator(np.random.Philox(key=derive_key(seed, *parts)))


# ---------------------------------------------------------------------------------------
# Host-side draws


def sample_draws(ops_: Sequence[str], params: AugmentParams, rng: np.random.Generator, n: int,
                 image_shape: Sequence[int]) -> dict[str, np.ndarray]:
    """The random values the ops in ``ops_`` need for ``n`` images, drawn on the host.

    Keys and meaning as :func:`components.inputs.augment.sample_draws`: ``shift_y/x``
    int32 px (crop and shift offsets added up), ``flip_h/v`` bool, ``scale`` factor,
    ``angle`` radians, ``brightness`` 0-255 units, ``contrast``/``saturation`` factors,
    ``hue`` turns, ``cutout_y/x`` int32 centres and ``cutout_on`` bool, ``mix_weight``
    Beta(alpha, alpha). Mixup's partners differ: not a permutation ``mix_partner`` but
    one int32 ``mix_shift`` in ``1..n-1`` per batch, see :func:`mixup`.

    Each op draws from its own Philox stream keyed by one number taken from ``rng`` and
    the op's id (its index in OPS), so switching one op on or off leaves the draws of the
    others unchanged, as augment.py's folded seeds do.
    """
    base = int(rng.integers(0, 2 ** 63))
    wanted = set(ops_)

    def stream(op: str) -> np.random.Generator:
        return np.random.Generator(np.random.Philox(key=np.array([base, OPS.index(op)], np.uint64)))

    def uniform(rng_: np.random.Generator, low: float, high: float) -> np.ndarray:
        return rng_.uniform(low, high, n).astype(np.float32)

    height, width = image_shape[:2]
    draws: dict[str, np.ndarray] = {}
    if wanted & {"random_crop", "random_shift"}:
        # Crop and shift are both integer translations: their offsets add up and run as one gather.
        dy, dx = np.zeros(n, np.int32), np.zeros(n, np.int32)
        for op, reach in (("random_crop", params.crop_padding), ("random_shift", params.max_shift)):
            if op in wanted:
                yx = stream(op).integers(-reach, reach + 1, (2, n), dtype=np.int32)
                dy, dx = dy + yx[0], dx + yx[1]
        draws["shift_y"], draws["shift_x"] = dy, dx
    if "flip_horizontal" in wanted:
        draws["flip_h"] = stream("flip_horizontal").random(n) < params.flip_probability
    if "flip_vertical" in wanted:
        draws["flip_v"] = stream("flip_vertical").random(n) < params.flip_probability
    if "random_scale" in wanted:
        draws["scale"] = uniform(stream("random_scale"), params.scale_min, params.scale_max)
    if "rotation" in wanted:
        limit = math.radians(params.rotation_degrees)
        draws["angle"] = uniform(stream("rotation"), -limit, limit)
    if "brightness" in wanted:
        draws["brightness"] = uniform(stream("brightness"), -params.brightness, params.brightness) * np.float32(255)
    if "contrast" in wanted:
        draws["contrast"] = uniform(stream("contrast"), 1 - params.contrast, 1 + params.contrast)
    if "saturation" in wanted:
        draws["saturation"] = uniform(stream("saturation"), 1 - params.saturation, 1 + params.saturation)
    if "hue" in wanted:
        draws["hue"] = uniform(stream("hue"), -params.hue, params.hue)
    if "cutout" in wanted:
        rng_ = stream("cutout")
        draws["cutout_y"] = rng_.integers(0, height, n, dtype=np.int32)
        draws["cutout_x"] = rng_.integers(0, width, n, dtype=np.int32)
        draws["cutout_on"] = rng_.random(n) < params.cutout_probability
    if "mixup" in wanted:
        rng_ = stream("mixup")
        draws["mix_weight"] = rng_.beta(params.mixup_alpha, params.mixup_alpha, n).astype(np.float32)
        # one number per batch: each image's partner is the one mix_shift places before it
        draws["mix_shift"] = np.asarray(rng_.integers(1, n) if n > 1 else 0, np.int32)
    return draws


# ---------------------------------------------------------------------------------------
# Device-side ops: pure keras.ops on a batch [n, H, W, C]; the batch size may be dynamic
# (TensorFlow's reduce_retracing relaxes it), height, width and channels are static.


def gather_pixels(images, rows, cols):
    """``out[b, i, j] = images[b, rows[b, i, j], cols[b, i, j]]``, zero where out of bounds; dtype kept.

    ``rows`` and ``cols`` are int32 and broadcast to ``[n, H, W]``. One flat gather of
    whole pixels; out-of-bounds reads are clipped to the border and then zeroed.
    """
    height, width, channels = images.shape[1:]
    n = ops.shape(images)[0]
    valid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    base = ops.arange(n, dtype="int32")[:, None, None] * (height * width)
    index = base + ops.clip(rows, 0, height - 1) * width + ops.clip(cols, 0, width - 1)
    out = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(index, (-1,)), axis=0)
    out = ops.reshape(out, (-1, height, width, channels))
    return ops.where(valid[..., None], out, ops.zeros_like(out))


def integer_source(rows, cols, height: int, width: int, shift_y=None, shift_x=None, flip_h=None, flip_v=None):
    """Where :func:`translate_flip` reads output pixel (rows, cols) from: the source (rows, cols).

    ``rows``/``cols``: int32, broadcastable to ``[n, H, W]``. Mirror first, then shift,
    as augment.py does.
    """
    if flip_v is not None:
        rows = ops.where(flip_v[:, None, None], height - 1 - rows, rows)
    if flip_h is not None:
        cols = ops.where(flip_h[:, None, None], width - 1 - cols, cols)
    if shift_y is not None:
        rows = rows + ops.cast(shift_y, "int32")[:, None, None]
        cols = cols + ops.cast(shift_x, "int32")[:, None, None]
    return rows, cols


def translate_flip(images, shift_y=None, shift_x=None, flip_h=None, flip_v=None):
    """Shift each image by whole pixels (zero fill) and mirror it, in one gather; dtype kept.

    ``shift_y/shift_x``: [n] int32 px (positive moves content up/left, i.e. the crop
    window down/right); ``flip_h/flip_v``: [n] bool. The same as padding by the largest
    shift and cropping at a random offset, without building the padded batch.
    """
    height, width = images.shape[1:3]
    rows = ops.arange(height, dtype="int32")[None, :, None]
    cols = ops.arange(width, dtype="int32")[None, None, :]
    return gather_pixels(images, *integer_source(rows, cols, height, width, shift_y, shift_x, flip_h, flip_v))


def scale_rotate(images, scale=None, angle=None, **integer):
    """Zoom by ``scale`` ([n], > 1 zooms in) and rotate by ``angle`` ([n] radians) about the centre.

    Bilinear interpolation, zero outside the source image; any pixel dtype in, float32 out.

    ``integer``: the draws of :func:`translate_flip` (``shift_y``, ``shift_x``,
    ``flip_h``, ``flip_v``), to run first. They are folded into the four corner reads
    instead of materialising the shifted batch: a corner inside the frame reads the
    source pixel translate_flip would have put there (zero where it pads), a corner
    outside the frame reads zero, exactly as the two steps one after the other. XLA-CPU
    runs the gathers of the two-step version ~2-3x slower than these direct ones.
    """
    height, width = images.shape[1:3]
    inverse_scale = 1.0 / scale if scale is not None else 1.0
    cos = ops.cos(angle) * inverse_scale if angle is not None else inverse_scale * ops.ones_like(scale)
    sin = ops.sin(angle) * inverse_scale if angle is not None else ops.zeros_like(scale)
    cos, sin = cos[:, None, None], sin[:, None, None]
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    y = ops.arange(height, dtype="float32")[None, :, None] - centre_y
    x = ops.arange(width, dtype="float32")[None, None, :] - centre_x
    # Where each output pixel comes from: the inverse rotation and zoom of its position.
    source_x = cos * x + sin * y + centre_x
    source_y = -sin * x + cos * y + centre_y
    x0, y0 = ops.floor(source_x), ops.floor(source_y)
    wx, wy = (source_x - x0)[..., None], (source_y - y0)[..., None]
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    compose = any(value is not None for value in integer.values())

    def corner(rows, cols):  # gathered in the input dtype (uint8: a quarter of the bytes), then float
        if not compose:
            return ops.cast(gather_pixels(images, rows, cols), "float32")
        in_frame = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        pixels = gather_pixels(images, *integer_source(rows, cols, height, width, **integer))
        return ops.cast(pixels, "float32") * ops.cast(in_frame, "float32")[..., None]

    top = corner(y0, x0) * (1 - wx) + corner(y0, x0 + 1) * wx
    bottom = corner(y0 + 1, x0) * (1 - wx) + corner(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def adjust_brightness(images, delta):
    """Add ``delta`` ([n], 0-255 units) to every pixel; clipped to [0, 255]."""
    return ops.clip(images + delta[:, None, None, None], 0.0, 255.0)


def adjust_contrast(images, factor):
    """Scale each pixel's distance from its image's per-channel mean by ``factor`` ([n]), as tf.image does."""
    mean = ops.mean(images, axis=(1, 2), keepdims=True)
    return ops.clip((images - mean) * factor[:, None, None, None] + mean, 0.0, 255.0)


def rgb_to_hsv(rgb):
    """Hue (turns, [0, 1)), saturation and value of RGB in [0, 1]; the hue sector from comparisons.

    Not ``keras.ops.image.rgb_to_hsv``: it picks the sector by float equality with the
    recomputed channel maximum, which XLA's fusion can break (see the module docstring).
    Here the sector is the first channel not below the others (``argmax``'s choice,
    written as comparisons, which XLA-CPU runs ~10x faster than an argmax over 3
    values); the three sector formulas agree where two channels tie, so a near-tie
    picking either sector gives the same hue.
    """
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = ops.maximum(ops.maximum(red, green), blue)
    chroma = value - ops.minimum(ops.minimum(red, green), blue)
    safe = ops.where(chroma > 0, chroma, 1.0)
    red_max = (red >= green) & (red >= blue)
    green_max = ops.logical_not(red_max) & (green >= blue)
    red_hue = (green - blue) / safe  # in [-1, 1] where red is the maximum: floor-mod 6 is one add
    hue = ops.where(red_max, ops.where(red_hue < 0, red_hue + 6.0, red_hue),
                    ops.where(green_max, (blue - red) / safe + 2.0, (red - green) / safe + 4.0))
    hue = ops.where(chroma > 0, hue / 6.0, 0.0)
    saturation = ops.where(value > 0, chroma / ops.where(value > 0, value, 1.0), 0.0)
    return hue, saturation, value


def hsv_to_rgb(hue, saturation, value):
    """RGB in [0, 1] from hue (turns, any real; wraps), saturation and value; branch-free.

    Channel n in (r: 5, g: 3, b: 1) is ``v - v s clip(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6``, the standard closed form (as augment.py). The hue is wrapped
    to [0, 1) once, so each channel's mod is a compare and subtract.
    """
    sextant = (hue - ops.floor(hue)) * 6.0  # [0, 6)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = sextant + n
        k = ops.where(k >= 6.0, k - 6.0, k)
        channels.append(value - value * saturation * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
    return ops.stack(channels, axis=-1)


def adjust_saturation_hue(images, saturation=None, hue=None):
    """Scale HSV saturation by ``saturation`` and rotate hue by ``hue`` (turns), per image ([n] each).

    One RGB->HSV->RGB round trip for both; 3-channel float32 images in 0-255 units,
    clipped to [0, 255].
    """
    h, s, v = rgb_to_hsv(images / 255.0)
    if hue is not None:
        h = h + hue[:, None, None]  # hsv_to_rgb wraps hue itself
    if saturation is not None:
        s = ops.clip(s * saturation[:, None, None], 0.0, 1.0)
    return ops.clip(hsv_to_rgb(h, s, v) * 255.0, 0.0, 255.0)


def cutout(images, centre_y, centre_x, active, size: int, fill: Sequence[float]):
    """Fill a ``size`` x ``size`` square centred at (centre_y, centre_x) with ``fill`` (per channel); dtype kept.

    The square is clipped at the border (DeVries & Taylor 2017), so it may be smaller at
    the edges; ``active`` ([n] bool) picks the images it applies to.
    """
    height, width = images.shape[1:3]
    rows = ops.arange(height, dtype="int32")[None, :, None]
    cols = ops.arange(width, dtype="int32")[None, None, :]
    half = size // 2
    top = ops.cast(centre_y, "int32")[:, None, None] - half
    left = ops.cast(centre_x, "int32")[:, None, None] - half
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size) & active[:, None, None]
    value = ops.cast(ops.convert_to_tensor(np.asarray(fill, np.float32)), images.dtype)
    return ops.where(inside[..., None], value, images)


def mixup(images, labels, weight, shift):
    """Blend each image and its one-hot label with the ``shift``-th one before it in the batch, weight ``weight`` ([n]).

    Image ``i``'s partner is image ``(i - shift) mod n`` (``shift``: an int32 scalar in
    ``1..n-1``), a roll of the batch rather than augment.py's random permutation: the
    batch is already a random sample in random order, so rolling pairs each image with a
    random other one all the same (timm's Mixup pairs with the reversed batch for this
    reason), and a gather along the batch axis costs XLA-CPU ~5x what the roll does.
    ``labels`` are float one-hot rows; the mixed rows still sum to one.
    """
    image_weight = weight[:, None, None, None]
    images = image_weight * images + (1 - image_weight) * ops.roll(images, shift, axis=0)
    labels = weight[:, None] * labels + (1 - weight[:, None]) * ops.roll(labels, shift, axis=0)
    return images, labels


def mix_partners(shift: int, n: int) -> np.ndarray:
    """The partner index of each image under :func:`mixup` with ``shift``: ``(i - shift) mod n``."""
    return (np.arange(n) - int(shift)) % n


def apply_draws(images, labels, draws: dict, ops_: Sequence[str], params: AugmentParams,
                fill: Sequence[float], num_classes: int, one_hot: bool):
    """Apply ``ops_`` (run order is OPS order) to a batch with the given draws; pure keras.ops.

    ``images``: uint8 ``[n, H, W, C]``; ``labels``: integer class ids ``[n]``. Returns
    images (uint8 when every op keeps uint8, else float32 in 0-255) and labels (as given,
    or float32 one-hot rows when ``one_hot``; mixup needs one-hot).
    """
    wanted = set(ops_)
    if one_hot:
        labels = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    integer = {key: draws.get(key) for key in ("shift_y", "shift_x", "flip_h", "flip_v")}
    if "scale" in draws or "angle" in draws:  # the integer ops folded in; uint8 in, float32 out
        images = scale_rotate(images, draws.get("scale"), draws.get("angle"), **integer)
    elif any(value is not None for value in integer.values()):
        images = translate_flip(images, **integer)
    if not output_is_uint8(wanted):
        images = ops.cast(images, "float32")
    if "brightness" in draws:
        images = adjust_brightness(images, draws["brightness"])
    if "contrast" in draws:
        images = adjust_contrast(images, draws["contrast"])
    if "saturation" in draws or "hue" in draws:
        images = adjust_saturation_hue(images, draws.get("saturation"), draws.get("hue"))
    if "cutout" in wanted:
        size = params.cutout_size or max(1, min(images.shape[1:3]) // 2)  # 0: half the side
        images = cutout(images, draws["cutout_y"], draws["cutout_x"], draws["cutout_on"], size, fill)
    if "mixup" in wanted:
        images, labels = mixup(images, labels, draws["mix_weight"], draws["mix_shift"])
    return images, labels


class DeviceAugmenter:
    """A configured augmentation: host draws (:meth:`draw`), device application (:meth:`apply`).

    ``ops``: expanded op names (:func:`components.inputs.policies.expand_policies`);
    ``standardize`` is ignored (the model's first layer does it). ``fill``: the value
    cutout erases with, one per channel or one for all (the data set mean, 0-255 units,
    rounded when the output stays uint8). ``one_hot``: labels leave as float32 one-hot
    rows (needed by mixup), else as given.
    """

    def __init__(self, ops: Sequence[str], params: AugmentParams, image_shape, num_classes: int,
                 fill: Sequence[float], one_hot: bool):
        unknown = [op for op in ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown augment op(s) {unknown}; known: {list(OPS)}")
        if "mixup" in ops and not one_hot:
            raise ValueError("mixup mixes labels, so it needs one-hot labels (one_hot=True)")
        self.image_shape = tuple(int(v) for v in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (height, width, channels), got {tuple(image_shape)}")
        channels = self.image_shape[2]
        if channels != 3 and {"saturation", "hue"} & set(ops):
            raise ValueError(f"saturation and hue need 3-channel (RGB) images, got {channels} channel(s)")
        if len(fill) not in (1, channels):
            raise ValueError(f"fill needs 1 or {channels} values (one per channel), got {list(fill)}")
        self.ops = tuple(op for op in DEVICE_OPS if op in set(ops))
        self.params = params
        self.num_classes = int(num_classes)
        self.one_hot = bool(one_hot)
        self.output_uint8 = output_is_uint8(self.ops)
        values = [float(v) for v in fill] * (channels if len(fill) == 1 else 1)
        self.fill = tuple(float(round(v)) for v in values) if self.output_uint8 else tuple(values)

    @property
    def config(self) -> tuple:
        """Everything :meth:`transform` depends on (hashable): equal configs share compiled functions."""
        return self.ops, self.params, self.image_shape, self.num_classes, self.fill, self.one_hot

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """The random values for a batch of ``n`` images (a few NumPy numbers per image)."""
        return sample_draws(self.ops, self.params, rng, n, self.image_shape)

    def transform(self, images, labels, draws: dict):
        """The uncompiled :meth:`apply`: pure keras.ops, for use inside another compiled function."""
        return apply_draws(images, labels, draws, self.ops, self.params, self.fill, self.num_classes, self.one_hot)

    def apply(self, images, labels, draws: dict) -> tuple:
        """``(images, labels)`` of a batch augmented with ``draws``, compiled (one trace per batch shape).

        Backend tensors (or NumPy arrays) in, backend tensors out; see :func:`apply_draws`.
        """
        return _compiled(self, "apply")(images, labels, draws)


class DeviceBatches(keras.utils.PyDataset):
    """``(images, labels)`` batches of a split held in device memory, for ``model.fit``/``evaluate``.

    ``images``: uint8 ``[N, H, W, C]``; ``labels``: class ids ``[N]`` (e.g. from
    :func:`components.inputs.arrays.read_split`). Both are converted to backend tensors
    once; each batch is a ``take`` of a host-computed index vector plus the augmentation,
    in one compiled function.

    ``training=True``: an endless stream (``num_batches`` is None). Batch ``i`` is a pure
    function of ``i``: global step ``g = start_epoch * steps_per_epoch + i``, epoch
    ``g // steps_per_epoch``; the epoch's order is a permutation from the (seed,
    "records", epoch) stream and the batch's augmentation draws come from (seed,
    "augment", epoch, step). So the same seed gives the same batches, and
    ``start_epoch=e`` starts exactly where an uninterrupted run was at epoch ``e``. With
    ``drop_remainder`` an epoch is ``N // batch_size`` full batches (the rest of the
    permutation is unused), else the last batch of each epoch is the smaller remainder.
    ``epoch_steps`` makes an epoch that many full batches instead (at most ``N //
    batch_size``): a budget shorter than a pass, or the count every worker of a
    multi-worker run can draw. ``stream`` names this stream among several drawing with
    one seed (e.g. ``("worker", 1)``): its parts go into every key, so each worker of a run
    gets its own order and augmentation; the default ``()`` keeps the single-process keys.
    Train with ``model.fit(batches, steps_per_epoch=batches.steps_per_epoch,
    shuffle=False, initial_epoch=e)`` and ``start_epoch=e``: Keras keeps one iterator
    over an endless PyDataset across epochs, so the fit's ``k``-th epoch reads batches
    ``k * steps_per_epoch`` on, i.e. epoch ``e + k``; ``shuffle=False`` because the
    stream is shuffled already (Keras warns that it ignores ``shuffle`` otherwise).

    ``training=False``: finite, the split in its stored order, every example exactly once
    (the last batch may be smaller), no augmentation, uint8 images.

    Labels: int64 class ids as a host NumPy array (JAX without x64 has no int64 on the
    device, and ids are a few hundred bytes a batch), or float32 one-hot device rows when
    ``one_hot`` (soft after mixup, rows sum to one). Images: uint8 when every op keeps
    uint8, else float32 in 0-255 units.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, num_classes: int, batch_size: int,
                 training: bool, ops: Sequence[str] = (), params: AugmentParams = AugmentParams(),
                 fill: Sequence[float] = (0.0,), one_hot: bool = False, seed: int = 0,
                 drop_remainder: bool = True, start_epoch: int = 0, epoch_steps: int | None = None,
                 stream: Sequence = ()):
        super().__init__()  # one worker, no processes: batches are device calls, threads would gain nothing
        images, labels = np.asarray(images), np.asarray(labels)
        _check_arrays(images, labels, num_classes)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")
        count = len(images)
        if training and drop_remainder and count < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {count} examples, so an epoch "
                             f"with drop_remainder has no batch")
        if epoch_steps is not None and not (training and 1 <= epoch_steps <= count // batch_size):
            raise ValueError(f"epoch_steps {epoch_steps} must be a training stream's number of full batches, "
                             f"1 to {count // batch_size} ({count} examples, batch_size {batch_size})")
        self.num_examples = count
        self.epoch_steps = epoch_steps
        self.stream = tuple(stream)
        self.batch_size = int(batch_size)
        self.training = bool(training)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.start_epoch = int(start_epoch)
        self.one_hot = bool(one_hot)
        self.augmenter = DeviceAugmenter(ops if training else (), params, images.shape[1:], num_classes, fill,
                                         one_hot)
        self._labels_host = labels.astype(np.int64)
        self._images = _to_device(images)
        self._labels = _to_device(labels.astype(np.int32))  # device-side only for one-hot rows
        self._permutations: dict[int, np.ndarray] = {}  # epoch -> order; the last two (prefetch runs ahead)
        self._take_and_augment = _compiled(self.augmenter, "take_and_augment")

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: ``epoch_steps`` when given, ``N // batch_size`` in training with
        drop_remainder, else ``ceil(N / batch_size)``."""
        if self.epoch_steps is not None:
            return self.epoch_steps
        if self.training and self.drop_remainder:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    @property
    def num_batches(self) -> int | None:
        """None in training (an endless stream, as Keras reads it); the batch count in evaluation."""
        return None if self.training else self.steps_per_epoch

    def __len__(self) -> int:
        """Batches per epoch (``steps_per_epoch``); Keras reads :attr:`num_batches`, so the stream stays endless."""
        return self.steps_per_epoch

    def epoch_and_step(self, index: int) -> tuple[int, int]:
        """``(epoch, step within it)`` of training batch ``index``, counting from ``start_epoch``."""
        return divmod(self.start_epoch * self.steps_per_epoch + index, self.steps_per_epoch)

    def batch_indices(self, index: int) -> np.ndarray:
        """The example indices (int32, into the split) of batch ``index``."""
        if index < 0 or (not self.training and index >= self.steps_per_epoch):
            raise IndexError(f"batch {index} out of range (0..{self.steps_per_epoch - 1})" if not self.training
                             else f"batch index must be >= 0, got {index}")
        if not self.training:
            stop = min((index + 1) * self.batch_size, self.num_examples)
            return np.arange(index * self.batch_size, stop, dtype=np.int32)
        epoch, step = self.epoch_and_step(index)
        return self._permutation(epoch)[step * self.batch_size:(step + 1) * self.batch_size]

    def __getitem__(self, index: int):
        """Batch ``index``: ``(images, labels)``, a pure function of ``index`` (see the class docstring)."""
        rows = self.batch_indices(index)
        if not self.training:
            start, size = int(rows[0]), len(rows)
            images = self._images[start:start + size]
            labels = (ops.one_hot(self._labels[start:start + size], self.augmenter.num_classes, dtype="float32")
                      if self.one_hot else self._labels_host[start:start + size])
            return images, labels
        epoch, step = self.epoch_and_step(index)
        draws = self.augmenter.draw(generator(self.seed, *self.stream, "augment", epoch, step), len(rows))
        images, labels = self._take_and_augment(self._images, self._labels, rows, draws)
        return images, (labels if self.one_hot else self._labels_host[rows])

    def _permutation(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s example order: a permutation from the (seed, "records", epoch) stream."""
        order = self._permutations.get(epoch)
        if order is None:
            order = generator(self.seed, *self.stream, "records", epoch).permutation(self.num_examples).astype(np.int32)
            self._permutations = {e: o for e, o in self._permutations.items() if e == epoch - 1}
            self._permutations[epoch] = order
        return order


# (backend, augmenter config, kind) -> compiled function. Compiling costs ~0.3-1 s per
# config on CPU, so the train stream, a resumed one and benchmarks with the same config
# share one; a handful of configs per process at most.
_COMPILED: dict[tuple, Callable] = {}


def _compiled(augmenter: DeviceAugmenter, kind: str) -> Callable:
    """The compiled ``apply`` (``f(images, labels, draws)``) or ``take_and_augment``
    (``f(all_images, all_labels, index, draws)``: the batch at ``index`` of the resident
    split, augmented; one function, so the compiler fuses the gather with the ops)."""
    key = (current_backend(), augmenter.config, kind)
    if key not in _COMPILED:
        transform = augmenter.transform
        if kind == "apply":
            function = transform
        else:
            def function(all_images, all_labels, index, draws):
                return transform(ops.take(all_images, index, axis=0), ops.take(all_labels, index, axis=0), draws)
        _COMPILED[key] = compile_function(function)
    return _COMPILED[key]


def _check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    """uint8 images ``[N, H, W, C]`` and ``N`` labels in ``0..num_classes-1``; ValueError saying what was received."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids [N] with N = {len(images)} images, got "
                         f"{labels.dtype} of shape {labels.shape}")
    if not len(images):
        raise ValueError("no examples: images and labels are empty")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(f"label {labels[bad[0]]} at index {bad[0]} is outside 0..{num_classes - 1}")


def _to_device(array: np.ndarray):
    """``array`` as a backend tensor on the default device (the GPU when there is one).

    JAX: ``convert_to_tensor`` places it there. TensorFlow: ``convert_to_tensor`` makes a
    host tensor that each GPU op would copy again, so an identity op copies it to the
    default device once.
    """
    tensor = ops.convert_to_tensor(array)
    if current_backend() == "tensorflow":
        import tensorflow as tf

        tensor = tf.identity(tensor)
    return tensor
