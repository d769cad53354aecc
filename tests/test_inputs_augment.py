"""Augmentation ops one by one: their invariants, reproducibility, and the same result with or without XLA."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from components.inputs import AugmentParams, expand_policies, output_is_uint8
from components.inputs import augment as aug
from components.inputs.policies import OPS

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (16, 12, 10, 3), dtype=np.uint8)  # non-square, to catch swapped axes
GRAY = RNG.integers(0, 256, (16, 12, 10, 1), dtype=np.uint8)
LABELS = RNG.integers(0, 10, 16)
SEED = tf.constant([7, 11], tf.int64)
FILL = (120.0, 110.0, 100.0)


def run_ops(ops, images=RGB, params=AugmentParams(), seed=SEED, one_hot=None, xla=False):
    one_hot = "mixup" in ops if one_hot is None else one_hot
    augmenter = aug.Augmenter(ops, params, images.shape[1:], 10, FILL[:images.shape[-1]], one_hot, xla=xla)
    out_images, out_labels = augmenter(tf.constant(images), tf.constant(LABELS, tf.int64), seed)
    return out_images.numpy(), out_labels.numpy()


def test_policies_expand_by_channel_count_in_a_fixed_order():
    assert expand_policies(["standard"], 3) == ("random_crop", "flip_horizontal")
    assert expand_policies(["standard"], 1) == ("random_shift",)  # MNIST family: shifts, no flip
    assert expand_policies(["none"], 3) == ()
    assert expand_policies(["mixup", "cutout", "standard"], 3) == ("random_crop", "flip_horizontal", "cutout", "mixup")
    tutorial = expand_policies(["tutorial"], 3)
    assert set(tutorial) == {"random_scale", "random_crop", "flip_horizontal", "flip_vertical", "rotation",
                             "brightness", "contrast", "saturation", "hue", "standardize"}
    assert "saturation" not in expand_policies(["tutorial"], 1) and "hue" not in expand_policies(["tutorial"], 1)
    with pytest.raises(ValueError, match="needs 3-channel"):
        expand_policies(["hue"], 1)
    assert output_is_uint8(expand_policies(["standard", "cutout"], 3))
    assert not output_is_uint8(expand_policies(["standard", "mixup"], 3))


def test_flips_mirror_exactly_and_keep_dtype():
    ones = tf.ones([16], tf.bool)
    np.testing.assert_array_equal(aug.translate_flip(tf.constant(RGB), flip_h=ones).numpy(), RGB[:, :, ::-1])
    np.testing.assert_array_equal(aug.translate_flip(tf.constant(RGB), flip_v=ones).numpy(), RGB[:, ::-1])
    always = AugmentParams(flip_probability=1.0)
    images, labels = run_ops(("flip_horizontal",), params=always)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, RGB[:, :, ::-1])
    np.testing.assert_array_equal(labels, LABELS)
    never, _ = run_ops(("flip_horizontal", "flip_vertical"), params=AugmentParams(flip_probability=0.0))
    np.testing.assert_array_equal(never, RGB)
    half, _ = run_ops(("flip_horizontal",))
    flipped = [np.array_equal(a, b[:, ::-1]) for a, b in zip(half, RGB)]
    kept = [np.array_equal(a, b) for a, b in zip(half, RGB)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


@pytest.mark.parametrize("op,reach", [("random_crop", 4), ("random_shift", 2)])
def test_crop_and_shift_keep_size_and_cut_a_window_of_the_zero_padded_image(op, reach):
    images, labels = run_ops((op,), images=GRAY if op == "random_shift" else RGB)
    source = GRAY if op == "random_shift" else RGB
    assert images.shape == source.shape and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, LABELS)
    padded = np.pad(source, [(0, 0), (reach, reach), (reach, reach), (0, 0)])
    height, width = source.shape[1:3]
    offsets = set()
    for image, pad in zip(images, padded):
        windows = [(dy, dx) for dy in range(2 * reach + 1) for dx in range(2 * reach + 1)
                   if np.array_equal(pad[dy:dy + height, dx:dx + width], image)]
        assert windows, "output is not a window of the padded image"
        offsets.update(windows)
    assert len(offsets) > 3  # offsets really vary across the batch


def cutout_mask(centre_y, centre_x, size: int, height: int, width: int) -> np.ndarray:
    """[n, H, W] bool: the ``size`` x ``size`` square at each centre (top-left at centre - size // 2),
    clipped at the border, written out pixel by pixel."""
    mask = np.zeros((len(centre_y), height, width), bool)
    for index, (cy, cx) in enumerate(zip(centre_y, centre_x)):
        for row in range(cy - size // 2, cy - size // 2 + size):
            for col in range(cx - size // 2, cx - size // 2 + size):
                if 0 <= row < height and 0 <= col < width:
                    mask[index, row, col] = True
    return mask


@pytest.mark.parametrize("size", [4, 0])  # 0: half the shorter side (5 px here)
def test_cutout_erases_one_clipped_square_with_the_mean(size):
    params = AugmentParams(cutout_size=size)
    images, labels = run_ops(("cutout",), params=params)
    np.testing.assert_array_equal(labels, LABELS)
    assert images.dtype == np.uint8
    draws = aug.sample_draws(("cutout",), params, SEED, 16, RGB.shape[1:])
    centre_y, centre_x = draws["cutout_y"].numpy(), draws["cutout_x"].numpy()
    assert draws["cutout_on"].numpy().all()  # probability 1: every image
    side = size or 5
    mask = cutout_mask(centre_y, centre_x, side, *RGB.shape[1:3])
    # Exactly the square (clipped) takes the fill, every other pixel is the source's.
    np.testing.assert_array_equal(images, np.where(mask[..., None], np.array(FILL, np.uint8), RGB))
    areas = mask.sum(axis=(1, 2))
    assert (areas > 0).all()  # the centre is inside the image, so something is always erased
    assert (areas == side * side).any() and (areas < side * side).any()  # whole squares and clipped ones
    never, _ = run_ops(("cutout",), params=AugmentParams(cutout_size=size, cutout_probability=0.0))
    np.testing.assert_array_equal(never, RGB)


def test_mixup_blends_images_and_labels_with_the_same_weights():
    params = AugmentParams(mixup_alpha=1.0)
    images, labels = run_ops(("mixup",), params=params)
    assert images.dtype == np.float32 and labels.shape == (16, 10)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    draws = aug.sample_draws(("mixup",), params, SEED, 16, RGB.shape[1:])
    weight, partner = draws["mix_weight"].numpy(), draws["mix_partner"].numpy()
    assert sorted(partner) == list(range(16)) and (0 <= weight).all() and (weight <= 1).all()
    expected = weight[:, None, None, None] * RGB + (1 - weight[:, None, None, None]) * RGB[partner]
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-3)
    one_hot = np.eye(10)[LABELS]
    np.testing.assert_allclose(labels, weight[:, None] * one_hot + (1 - weight[:, None]) * one_hot[partner], atol=1e-6)
    with pytest.raises(ValueError, match="one-hot"):
        run_ops(("mixup",), one_hot=False)


def test_colour_ops_match_tf_image():
    x = tf.constant(RGB, tf.float32)
    n = tf.shape(x)[0]
    np.testing.assert_allclose(aug.adjust_brightness(x, tf.fill([n], 20.0)).numpy(),
                               tf.clip_by_value(tf.image.adjust_brightness(x, 20.0), 0, 255).numpy(), atol=1e-4)
    np.testing.assert_allclose(aug.adjust_contrast(x, tf.fill([n], 1.3)).numpy(),
                               tf.clip_by_value(tf.image.adjust_contrast(x, 1.3), 0, 255).numpy(), atol=1e-3)
    for saturation, hue in ((1.2, None), (None, 0.1), (0.7, -0.2), (None, 0.5)):
        expected = x / 255
        if saturation is not None:
            expected = tf.image.adjust_saturation(expected, saturation)
        if hue is not None:
            expected = tf.image.adjust_hue(expected, hue)
        got = aug.adjust_saturation_hue(x, None if saturation is None else tf.fill([n], saturation),
                                        None if hue is None else tf.fill([n], hue))
        np.testing.assert_allclose(got.numpy(), expected.numpy() * 255, atol=0.05)


def test_scale_rotate_is_exact_for_identity_and_quarter_turns():
    square = tf.constant(RNG.integers(0, 256, (4, 9, 9, 3)), tf.float32)
    ones, zeros = tf.ones([4]), tf.zeros([4])
    np.testing.assert_allclose(aug.scale_rotate(square, ones, zeros).numpy(), square.numpy(), atol=1e-4)
    quarter = aug.scale_rotate(square, ones, tf.fill([4], np.pi / 2)).numpy()
    matches = [np.allclose(quarter, np.rot90(square.numpy(), k, axes=(1, 2)), atol=1e-3) for k in (1, 3)]
    assert any(matches)
    zoomed = aug.scale_rotate(square, tf.fill([4], 2.0), zeros).numpy()
    np.testing.assert_allclose(zoomed[:, 4, 4], square.numpy()[:, 4, 4], atol=1e-4)  # the centre stays put


def test_every_op_but_mixup_leaves_labels_alone_and_pixels_in_range():
    ops = tuple(op for op in OPS if op != "mixup")
    images, labels = run_ops(ops)
    np.testing.assert_array_equal(labels, LABELS)
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255
    gray, gray_labels = run_ops(tuple(op for op in ops if op not in ("saturation", "hue")), images=GRAY)
    assert gray.shape == GRAY.shape
    np.testing.assert_array_equal(gray_labels, LABELS)


def test_same_seed_same_draws_other_seed_other_draws_and_ops_do_not_disturb_each_other():
    ops = ("random_crop", "flip_horizontal", "cutout")
    first, _ = run_ops(ops)
    np.testing.assert_array_equal(run_ops(ops)[0], first)
    assert not np.array_equal(run_ops(ops, seed=tf.constant([7, 12], tf.int64))[0], first)
    alone = aug.sample_draws(("random_crop",), AugmentParams(), SEED, 16, RGB.shape[1:])
    # adding ops leaves the crop's offsets unchanged (random_shift left out: its offsets add to the crop's)
    without_shift = aug.sample_draws(tuple(op for op in OPS if op != "random_shift"), AugmentParams(), SEED, 16,
                                     RGB.shape[1:])
    np.testing.assert_array_equal(alone["shift_x"].numpy(), without_shift["shift_x"].numpy())
    np.testing.assert_array_equal(alone["shift_y"].numpy(), without_shift["shift_y"].numpy())


@pytest.mark.parametrize("ops", [("random_crop", "flip_horizontal", "flip_vertical", "cutout"),
                                 ("random_scale", "rotation", "brightness", "contrast", "saturation", "hue",
                                  "cutout", "mixup")])
def test_xla_gives_the_same_result(ops):
    plain, plain_labels = run_ops(ops, xla=False)
    compiled, compiled_labels = run_ops(ops, xla=True)
    assert plain.dtype == compiled.dtype
    if plain.dtype == np.uint8:
        np.testing.assert_array_equal(compiled, plain)
    else:
        np.testing.assert_allclose(compiled, plain, atol=0.01)
    np.testing.assert_allclose(compiled_labels, plain_labels, atol=1e-6)


def test_parameters_are_used():
    wide = dataclasses.replace(AugmentParams(), crop_padding=0)
    images, _ = run_ops(("random_crop",), params=wide)
    np.testing.assert_array_equal(images, RGB)  # no padding: nothing to crop
    still, _ = run_ops(("brightness", "contrast"), params=AugmentParams(brightness=0.0, contrast=0.0))
    np.testing.assert_allclose(still, RGB.astype(np.float32), atol=1e-3)
