"""Stage ``report``: compare every evaluated experiment with the tutorials' and papers' figures.

    python -m pipeline.report [--metrics-dir metrics] [--out-dir reports] [--no-mlflow] [--verbose]

Writes ``reports/summary.md``, ``reports/accuracy_vs_params.png`` and
``reports/accuracy_vs_train_time.png``. MLflow is consulted when a store is configured
(``MLFLOW_TRACKING_URI``, or the local ``mlflow.db`` exists) and skipped with a note if it
does not answer. Exit status 2 on bad input (no metrics, or a metrics file that does not parse).
"""
from __future__ import annotations

import argparse
import sys

from components.console import quiet_console
from components.evaluation import EvaluationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics-dir", default="metrics", help="root of the <experiment>/test.json metrics files")
    parser.add_argument("--out-dir", default="reports", help="where summary.md and the charts go")
    parser.add_argument("--no-mlflow", action="store_true", help="do not consult the MLflow tracking store")
    parser.add_argument("--verbose", action="store_true", help="show everything the libraries print")
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    from components.evaluation.report import build_report

    try:
        summary = build_report(args.metrics_dir, args.out_dir, use_mlflow=not args.no_mlflow)
    except EvaluationError as error:
        print(f"report: error: {error}", file=sys.stderr)
        return 2
    print(f"report: wrote {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
