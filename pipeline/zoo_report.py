"""Stage ``report`` of a zoo set: every experiment of the set, one line per model.

    python -m pipeline.zoo_report --set zoo_cpu [--params params.yaml] [--no-mlflow] [--verbose]

Writes ``<set root>/reports/summary.md`` (``zoo/cpu/reports/`` for ``zoo_cpu``, ``zoo/paper/``
for ``zoo``) and its two charts: the zoo table (every experiment of the set, evaluated or not
yet: model, family, parameters, MACs, budget, images seen, train images/s, accuracy, floor,
verdict, the seed's and the paper's figures) and the comparison beside the default
experiments. Builds each model once to count its multiply-adds (about a minute for the zoo).
Exit status 2 on bad input (an unknown set, a params or metrics file that does not parse).
"""
from __future__ import annotations

import argparse
import sys

from components.config import ConfigError, load_params
from components.console import quiet_console, start_tensorflow
from components.evaluation import EvaluationError
from components.experiments import EXPERIMENT_SECTIONS, experiment_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="section", required=True, choices=EXPERIMENT_SECTIONS[1:],
                        help="the zoo set (a params.yaml section)")
    parser.add_argument("--params", default="params.yaml", help="params file: the set, its recipes, the train settings")
    parser.add_argument("--no-mlflow", action="store_true", help="do not consult the MLflow tracking store")
    parser.add_argument("--verbose", action="store_true", help="show everything the libraries print")
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    try:
        experiment_set(args.section)
        params = load_params(args.params)
        start_tensorflow(args.verbose)  # the zoo table builds each model to count its multiply-adds
        from components.evaluation.zoo_report import build_set_report

        summary = build_set_report(args.section, params, args.params, use_mlflow=not args.no_mlflow)
    except (ConfigError, EvaluationError) as error:
        print(f"report: error: {error}", file=sys.stderr)
        return 2
    print(f"report: wrote {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
