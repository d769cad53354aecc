"""Stage ``prepare``: convert one data set to sharded TFRecords with Apache Beam.

    python -m pipeline.prepare --dataset cifar10 [--raw-dir DIR] [--out-dir DIR] [BEAM OPTIONS...]

Options the script does not know are handed to Beam, so any runner works, e.g.
``--runner=DaskRunner --dask_client_address=tcp://scheduler:8786``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile

from components.config import ConfigError, load_section
from components.data import DataError, list_datasets


@contextlib.contextmanager
def stderr_held_back():
    """Send file descriptor 2 to a temporary file while the block runs; replay it if the block
    fails with anything but a DataError or ConfigError.

    Beam's worker processes inherit the descriptor, and a worker prints a failing bundle's
    traceback to it unconditionally (besides start-up chatter), while the driver raises the
    same error, which this script reports in one line. An unexpected error still shows all.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except (ConfigError, DataError):
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            held.seek(0)
            shutil.copyfileobj(held, sys.stderr.buffer)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def one_line(message: str) -> str:
    """``message`` on one line: the CLI promises one line per error, and some messages quote
    text with line breaks of its own (a YAML parser's, say)."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


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
        # Workers log a failing bundle with its traceback too; the driver gets the same error.
        beam_args = ["--default_sdk_harness_log_level=CRITICAL", *beam_args]
    try:
        with contextlib.nullcontext() if args.verbose else stderr_held_back():
            # Imported here, after logging is set up and with stderr held back: importing
            # Beam logs a warning of its own (apitools is not installed) through the root
            # logger, which would otherwise precede the one-line error on stderr.
            from components.data.prepare import PrepareConfig, prepare_dataset

            config = load_section(PrepareConfig, "prepare", args.params)
            prepare_dataset(args.dataset, config, args.raw_dir, args.out_dir, beam_args)
    except (ConfigError, DataError) as error:
        print(f"prepare: error: {one_line(str(error))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
