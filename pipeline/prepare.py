"""Stage ``prepare``: convert one data set to sharded TFRecords with Apache Beam.

    python -m pipeline.prepare --dataset cifar10 [--raw-dir DIR] [--out-dir DIR] [BEAM OPTIONS...]

Options the script does not know are handed to Beam, so any runner works, e.g.
``--runner=DaskRunner --dask_client_address=tcp://scheduler:8786``.
"""
from __future__ import annotations

import argparse
import logging
import sys

from components.config import ConfigError, load_section
from components.data import DataError, list_datasets
from components.data.prepare import PrepareConfig, prepare_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(list_datasets())}")
    parser.add_argument("--raw-dir", help="directory of the publisher's files (default: <raw_root>/<dataset>)")
    parser.add_argument("--out-dir", help="output directory (default: <out_root>/<dataset>)")
    parser.add_argument("--params", default="params.yaml", help="params file (section 'prepare')")
    parser.add_argument("--verbose", action="store_true", help="show Beam's own log, tracebacks included")
    args, beam_args = parser.parse_known_args(argv)
    # Beam logs a worker's exception with its whole traceback; the error below says it in one line.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        beam_args = [*beam_args, "--default_sdk_harness_log_level=WARNING"]
    try:
        config = load_section(PrepareConfig, "prepare", args.params)
        prepare_dataset(args.dataset, config, args.raw_dir, args.out_dir, beam_args)
    except (ConfigError, DataError) as error:
        print(f"prepare: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
