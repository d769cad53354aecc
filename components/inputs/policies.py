"""Augmentation policy names and their expansion into ops (no TensorFlow here).

``params.yaml`` names policies (``augment: [standard, cutout]``); each policy stands for
a list of ops. The expansion depends on the image's channel count, because the
"standard" recipes differ: CIFAR-like (3 channels) use pad-and-random-crop plus a
horizontal flip, the MNIST family (1 channel) small random shifts and no flip (a
mirrored digit or shoe is a different thing, or no thing at all).

Ops always run in the fixed order of :data:`OPS`, whatever order the list gives: the
integer geometric ops first (they keep uint8 and fuse into one gather), then the
interpolating ones, then colour, cutout and mixup last (a mixed pair of images should
each have been augmented on its own). A fixed order also makes the result independent
of how a person happened to write the list.
"""
from __future__ import annotations

from typing import Sequence

# Every op, in the order they run. Each has a fixed id (its position) that salts its
# random seed, so adding an op to a list never changes the draws of the others.
OPS = (
    "random_crop",      # pad by augment_params.crop_padding px, crop back at a random offset
    "random_shift",     # shift by up to augment_params.max_shift px each way (pad-and-crop, smaller)
    "flip_horizontal",  # mirror left-right with probability flip_probability
    "flip_vertical",    # mirror top-bottom with probability flip_probability
    "random_scale",     # zoom in or out about the centre (bilinear)
    "rotation",         # rotate about the centre (bilinear)
    "brightness",       # add a random offset
    "contrast",         # scale the distance from each image's per-channel mean
    "saturation",       # scale HSV saturation (3 channels only)
    "hue",              # rotate HSV hue (3 channels only)
    "standardize",      # per-image standardisation, done by the model's first layer (see normalization.py)
    "cutout",           # erase a random square (DeVries & Taylor 2017), filled with the data set mean
    "mixup",            # blend random pairs of images and their labels (Zhang et al. 2018)
)

# Ops that keep uint8 pixels exactly (integer index arithmetic or masking). Any other
# op makes the batch float32, still in 0-255 units.
UINT8_OPS = frozenset({"random_crop", "random_shift", "flip_horizontal", "flip_vertical",
                       "standardize", "cutout"})
COLOR_ONLY_OPS = frozenset({"saturation", "hue"})

_TUTORIAL = ("random_scale", "random_crop", "flip_horizontal", "flip_vertical", "rotation",
             "brightness", "contrast", "saturation", "hue", "standardize")

GROUPS = ("none", "standard", "tutorial")
POLICIES = GROUPS + OPS


def check_policy_names(names: Sequence[str]) -> None:
    """Raise ValueError for unknown names, or ``none`` combined with anything else."""
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augment policy {unknown}; known: groups {list(GROUPS)}, ops {list(OPS)}")
    if "none" in names and len(set(names)) > 1:
        raise ValueError(f"augment policy 'none' cannot be combined with others, got {list(names)}")


def expand_policies(names: Sequence[str], channels: int) -> tuple[str, ...]:
    """The ops a list of policy names stands for, for images of ``channels`` channels, in run order.

    ``standard`` is ``random_crop`` + ``flip_horizontal`` for 3 channels and
    ``random_shift`` for 1 channel. ``tutorial`` is the tutorials' list; on 1-channel
    images it leaves out ``saturation`` and ``hue``, which have no meaning there.
    Naming ``saturation`` or ``hue`` directly for 1-channel images is an error.
    """
    check_policy_names(names)
    if channels not in (1, 3):
        raise ValueError(f"augmentation supports 1- or 3-channel images, got {channels} channels")
    wanted: set[str] = set()
    for name in names:
        if name == "standard":
            wanted.update(("random_crop", "flip_horizontal") if channels == 3 else ("random_shift",))
        elif name == "tutorial":
            wanted.update(op for op in _TUTORIAL if channels == 3 or op not in COLOR_ONLY_OPS)
        elif name != "none":
            if channels == 1 and name in COLOR_ONLY_OPS:
                raise ValueError(f"augment op '{name}' needs 3-channel (RGB) images; "
                                 f"this data set has 1 channel")
            wanted.add(name)
    return tuple(op for op in OPS if op in wanted)


def output_is_uint8(ops: Sequence[str]) -> bool:
    """Whether a batch stays uint8 through these ops (else it leaves as float32, 0-255 units)."""
    return all(op in UINT8_OPS for op in ops)
