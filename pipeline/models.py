"""Print the model zoo as a table, or draw one model.

    python -m pipeline.models [--input-shape 32,32,3] [--num-classes 10]
    python -m pipeline.models --plot resnet20 --out resnet20.png

The table lists every registered model for the given input shape: parameters,
multiply-adds per image, depth (weight layers on the longest path), total weight layers,
and the paper. All logic lives in ``components.models.summary``; this script only parses
arguments and prints.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the table


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"32,32,3"`` -> ``(32, 32, 3)``; argparse turns the ValueError into a usage error."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: expected H,W,C integers, e.g. 32,32,3") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: expected 3 comma-separated integers (H,W,C)")
    return shape  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of the model table / diagram."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-shape", type=parse_shape, default=(32, 32, 3), help="H,W,C (default 32,32,3)")
    parser.add_argument("--num-classes", type=int, default=10, help="number of classes (default 10)")
    parser.add_argument("--models", nargs="+", metavar="NAME", help="only these models (default: all)")
    parser.add_argument("--plot", metavar="NAME", help="draw this model instead of printing the table")
    parser.add_argument("--out", metavar="FILE.png", help="where --plot writes the diagram (default NAME.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    from components.models import ModelConfigError, create_model
    from components.models import summary

    try:
        if args.plot:
            model = create_model(args.plot, args.input_shape, args.num_classes)
            print(summary.plot_model_diagram(model, args.out or f"{args.plot}.png"))
            return 0
        rows = summary.model_rows(args.input_shape, args.num_classes, args.models)
    except ModelConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shape = "x".join(str(d) for d in args.input_shape)
    print(f"Model zoo for input {shape}, {args.num_classes} classes. params: all weights incl. BN moving "
          f"statistics; MACs: conv/dense multiply-adds per image; depth: weight layers on the longest path\n")
    print(summary.format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
