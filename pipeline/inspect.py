"""Look at what the model is fed: a PNG grid of augmented training images with their class names.

    python -m pipeline.inspect --dataset cifar10 --augment standard [--data-dir DIR] [--out PNG] [--count 32]

Images come from the real training pipeline (``components.inputs.build_dataset`` with
``training=True``), so they are shuffled and augmented exactly as in training, and shown
as the pipeline emits them: raw 0-255 pixels (normalisation is the model's first layer,
so there is nothing to undo). Under mixup each title names the two classes mixed and
their weights. The pipeline's settings (augmentation strengths, seed) come from
``train.input`` in the params file when it has one; ``--augment`` sets the policy list.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import sys

import numpy as np

from components.config import ConfigError, from_dict, load_params
from components.data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--augment", default="standard", help="comma-separated policies, e.g. standard,cutout")
    parser.add_argument("--data-dir", help="prepared directory (default: <prepare.out_root>/<dataset>)")
    parser.add_argument("--out", help="PNG to write (default: reports/inspect/<dataset>-<augment>.png)")
    parser.add_argument("--count", type=int, default=32, help="images in the grid")
    parser.add_argument("--seed", type=int, help="overrides the seed (default: train.input.seed, else 0)")
    parser.add_argument("--params", default="params.yaml", help="params file; its train.input section if present")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        out = write_grid(args)
    except (ConfigError, DataError, ValueError) as error:
        print(f"inspect: error: {error}", file=sys.stderr)
        return 1
    print(f"[inspect] wrote {out}")
    return 0


def write_grid(args) -> pathlib.Path:
    """Build the training pipeline for ``args``, take one batch and save it as a labelled grid."""
    from components.experiments import data_root
    from components.inputs import InputConfig, build_dataset, check_prepared

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    params = load_params(args.params) if pathlib.Path(args.params).exists() else {}
    section = (params.get("train") or {}).get("input")
    config = from_dict(InputConfig, section, where=f"{args.params}:train.input")
    policies = [p.strip() for p in args.augment.split(",") if p.strip()]
    config = dataclasses.replace(config, augment=policies, batch_size=args.count, drop_remainder=False,
                                 repeat=False, data_service=None, cache="none",  # one batch: nothing to cache
                                 seed=config.seed if args.seed is None else args.seed)
    data_dir = args.data_dir or str(pathlib.Path(data_root(params)) / args.dataset)
    info = check_prepared(data_dir, ("train",), mode=config.verify_shards)
    images, labels = next(iter(build_dataset(data_dir, "train", config, training=True)))
    titles = [caption(label, info["label_names"]) for label in labels.numpy()]
    out = pathlib.Path(args.out or f"reports/inspect/{args.dataset}-{'+'.join(policies)}.png")
    save_grid(images.numpy(), titles, out, f"{info['name']} train, augment {'+'.join(policies)} "
                                           f"(raw 0-255 pixels, as fed to the model)")
    return out


def caption(label, names: list[str]) -> str:
    """A class name for an int label; for a soft label the two largest classes and their weights."""
    label = np.asarray(label)
    if label.ndim == 0:
        return names[int(label)]
    top = np.argsort(label)[::-1][:2]
    if label[top[1]] < 0.005:  # would print as 0.00
        return names[top[0]]
    return f"{names[top[0]]} {label[top[0]]:.2f}\n{names[top[1]]} {label[top[1]]:.2f}"


def save_grid(images: np.ndarray, titles: list[str], out: pathlib.Path, heading: str, columns: int = 8) -> None:
    """Save images (N, H, W, C) in 0-255 units as a grid PNG with one title each (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles):
        pixels = np.clip(image.astype(np.float32), 0, 255).astype(np.uint8)
        if pixels.shape[-1] == 1:
            axis.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            axis.imshow(pixels, interpolation="nearest")
        axis.set_title(title, fontsize=7)
    figure.suptitle(heading, fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
