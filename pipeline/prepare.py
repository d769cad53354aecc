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
from components.console import is_beam_worker_noise, quiet_console, without_noise
from components.data import DataError, list_datasets


@contextlib.contextmanager
def stderr_held_back():
    """Send file descriptor 2 to a temporary file while the block runs; then write it back,
    less Beam's worker start-up chatter, if the block succeeds; all of it if the block fails
    with anything but a DataError or ConfigError; nothing on those two.

    Beam's worker processes inherit the descriptor, and a worker prints a failing bundle's
    traceback to it unconditionally (besides start-up chatter), while the driver raises the
    same error, which this script reports in one line. An unexpected error still shows all,
    and a run that works keeps its real warnings (``components/console.py``, item 4).
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
        else:
            sys.stderr.flush()
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.buffer.write(without_noise(held.read(), is_beam_worker_noise))
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
    parser.add_argument("--raw-dir", help="directory of the publisher's files, a path or a URL Beam knows "
                        "(s3://, gs://, hdfs://; default: <raw_root>/<dataset>)")
    parser.add_argument("--out-dir", help="output directory, a path or a URL Beam knows (default: <out_root>/<dataset>)")
    parser.add_argument("--params", default="params.yaml", help="params file (section 'prepare')")
    parser.add_argument("--verbose", action="store_true",
                        help="show everything the libraries print: Beam's own log, tracebacks, start-up notices")
    args, beam_args = parser.parse_known_args(argv)
    quiet_console(args.verbose)
    # Beam logs a worker's exception with its whole traceback; the error below says it in one line.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        # Workers log a failing bundle with its traceback too; the driver gets the same error.
        beam_args = ["--default_sdk_harness_log_level=CRITICAL", *beam_args]
    try:
        with contextlib.nullcontext() if args.verbose else stderr_held_back():
            # Imported here, after logging is set up and with stderr held back: importing
            # Beam logs a notice of its own (apitools is not installed) through the root
            # logger; quiet_console's filter drops it, and --verbose shows it.
            from components.data.prepare import PrepareConfig, prepare_dataset

            config = load_section(PrepareConfig, "prepare", args.params)
            prepare_dataset(args.dataset, config, args.raw_dir, args.out_dir, beam_args)
    except (ConfigError, DataError) as error:
        print(f"prepare: error: {one_line(str(error))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
