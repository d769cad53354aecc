"""Benchmarks: ``python -m pipeline.bench {prepare,prepare-scale,input,train} [options]``.

Each prints one JSON line with our figure, a baseline measured in the same run, and
their ratio. See ``components/benchmarks``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

BENCHMARKS = ("prepare", "prepare-scale", "input", "train")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="benchmark", required=True)
    modules = {}
    for name in BENCHMARKS:
        module_name = f"components.benchmarks.{name.replace('-', '_')}"
        try:
            modules[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        modules[name].add_arguments(commands.add_parser(name, help=modules[name].__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    print(json.dumps(modules[args.benchmark].run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
