"""``bench input``: our tf.data pipeline against the tutorials' per-example map, images per second.

Ours reads the prepared TFRecords (``<prepare.out_root>/<dataset>``), shuffles, batches,
parses whole batches and augments them as batched ops, uint8 out (normalisation is the
model's first layer). Its headline figure reads the shards every epoch (``cache: none``);
a second figure uses ``cache: memory`` (serialized records kept after the first epoch,
parsed every epoch), a third ``cache: decoded`` (params.yaml's default: the split decoded
in memory once, batches gathered by a shuffled index and augmented).

The baseline is the tutorials' way: the same split already in memory as a NumPy array,
``Dataset.from_tensor_slices(...).map(per_example_aug, num_parallel_calls=AUTOTUNE)
.batch(256)``, where ``per_example_aug`` applies the same augmentation to one image with
``tf.image`` ops and normalises it to float (mean and std of the train split). It does
no reading, parsing or shuffling, so the comparison favours it.

Each side is timed over ``--images`` images, ``--repeats`` times, the sides taking turns
(each turn after a warm-up); the best and the median of the repeats are reported. The
machine's load average is printed with the result, since other processes on a shared
machine move these figures.
"""
from __future__ import annotations

import os
import pathlib
import statistics
import time

WARMUP_BATCHES = 20


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", help="prepared directory (default: <prepare.out_root>/<dataset>)")
    parser.add_argument("--augment", default="standard",
                        help="comma-separated policies (default: standard); the baseline has per-example "
                             "versions of: none, standard, random_crop, random_shift, flip_horizontal, "
                             "flip_vertical, brightness, contrast, saturation, hue")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=60000, help="images timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-xla", action="store_true", help="run our augmentation without XLA")


def per_example_augmentation(ops: tuple[str, ...], params, image_shape, mean, std):
    """The tutorials' per-example function: tf.image ops on one image, then float normalisation."""
    import tensorflow as tf

    height, width, channels = image_shape
    supported = {"random_crop", "random_shift", "flip_horizontal", "flip_vertical", "brightness", "contrast",
                 "saturation", "hue"}
    missing = sorted(set(ops) - supported)
    if missing:
        raise SystemExit(f"bench input: the per-example baseline has no version of {missing}; "
                         f"choose from none, standard or {sorted(supported)}")
    pad = (params.crop_padding if "random_crop" in ops else 0) + (params.max_shift if "random_shift" in ops else 0)
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)

    def augment(image, label):
        if pad:
            image = tf.image.resize_with_crop_or_pad(image, height + 2 * pad, width + 2 * pad)
            image = tf.image.random_crop(image, [height, width, channels])
        if "flip_horizontal" in ops:
            image = tf.image.random_flip_left_right(image)
        if "flip_vertical" in ops:
            image = tf.image.random_flip_up_down(image)
        image = tf.cast(image, tf.float32)
        if "brightness" in ops:
            image = tf.image.random_brightness(image, params.brightness * 255)
        if "contrast" in ops:
            image = tf.image.random_contrast(image, 1 - params.contrast, 1 + params.contrast)
        if "saturation" in ops:
            image = tf.image.random_saturation(image / 255, 1 - params.saturation, 1 + params.saturation) * 255
        if "hue" in ops:
            image = tf.image.random_hue(image / 255, params.hue) * 255
        return (image - mean) / std, label

    return augment


def time_datasets(datasets: dict, batch_size: int, images: int, repeats: int) -> dict[str, list[float]]:
    """Images per second of each dataset over ``repeats`` rounds of ``images`` images.

    The rounds alternate between the datasets, so a change in the machine's load during
    the run hits every side alike. Each timed run starts after ``WARMUP_BATCHES`` untimed
    batches, which bring its prefetch buffer back to the steady state.
    """
    iterators = {name: iter(dataset) for name, dataset in datasets.items()}
    batches = -(-images // batch_size)
    rates: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(repeats):
        for name, iterator in iterators.items():
            for _ in range(WARMUP_BATCHES):
                next(iterator)
            started = time.perf_counter()
            for _ in range(batches):
                next(iterator)
            rates[name].append(batches * batch_size / (time.perf_counter() - started))
    return rates


def run(args) -> dict:
    import dataclasses

    import tensorflow as tf

    from components.inputs import InputConfig, check_prepared, expand_policies, output_is_uint8
    from components.inputs.arrays import read_split

    from components.config import load_params
    from components.experiments import data_root

    params = load_params() if pathlib.Path("params.yaml").exists() else {}
    data_dir = args.data_dir or str(pathlib.Path(data_root(params)) / args.dataset)
    info = check_prepared(data_dir, ("train",))
    policies = [p.strip() for p in args.augment.split(",") if p.strip()]
    config = InputConfig(batch_size=args.batch_size, augment=policies, repeat=True, xla=not args.no_xla)
    ops = expand_policies(policies, info["image_shape"][2])
    load_before = os.getloadavg()[0]

    images, labels = read_split(data_dir, "train", info)  # the whole split in memory, for the baseline
    stats = info["train_statistics"]
    augment = per_example_augmentation(ops, config.augment_params, info["image_shape"], stats["mean"], stats["std"])
    baseline_ds = (tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
                   .map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size)
                   .prefetch(tf.data.AUTOTUNE))
    rates = time_datasets({"ours": _ours(data_dir, config),
                           "cached": _ours(data_dir, dataclasses.replace(config, cache="memory")),
                           "decoded": _ours(data_dir, dataclasses.replace(config, cache="decoded")),
                           "baseline": baseline_ds}, args.batch_size, args.images, args.repeats)
    ours, cached, decoded, baseline = rates["ours"], rates["cached"], rates["decoded"], rates["baseline"]

    return {
        "benchmark": "input", "dataset": args.dataset, "augment": policies, "ops": list(ops),
        "batch_size": args.batch_size, "images_timed": -(-args.images // args.batch_size) * args.batch_size,
        "repeats": args.repeats,
        "ours_images_per_s": round(max(ours)), "ours_median_images_per_s": round(statistics.median(ours)),
        "ours_source": "TFRecord shards read and parsed every epoch (cache: none)",
        "ours_output": (f"{'uint8' if output_is_uint8(ops) else 'float32'} 0-255, "
                        "not normalised (the model's first layer is)"),
        "ours_xla": config.xla,
        "ours_cached_images_per_s": round(max(cached)),
        "ours_cached_source": "serialized records cached in memory after epoch 1, parsed every epoch (cache: memory)",
        "ours_decoded_images_per_s": round(max(decoded)),
        "ours_decoded_source": "the split decoded in memory once, batches gathered by index (cache: decoded)",
        "baseline_images_per_s": round(max(baseline)),
        "baseline_median_images_per_s": round(statistics.median(baseline)),
        "baseline_source": ("in-memory NumPy array, from_tensor_slices + per-example map(AUTOTUNE) "
                            "+ float normalisation"),
        "ratio": round(max(ours) / max(baseline), 2),
        "ratio_median": round(statistics.median(ours) / statistics.median(baseline), 2),
        "ratio_cached": round(max(cached) / max(baseline), 2),
        "ratio_decoded": round(max(decoded) / max(baseline), 2),
        "target_ratio_min": 2.0,
        "cpus": os.cpu_count(), "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _ours(data_dir: str, config):
    from components.inputs import build_dataset

    return build_dataset(data_dir, "train", config, training=True)
