"""Stage ``evaluate``: score one experiment's exported model on the test split and judge it.

    python -m pipeline.evaluate --experiment NAME [--params params.yaml] [--verbose]

Reads ``experiments.NAME`` (or ``zoo.NAME``, ``zoo_cpu.NAME``: dataset, model),
``train.models_dir`` and ``prepare.out_root`` (where its files are:
:mod:`components.experiments`), and the ``evaluate`` section of the params file; writes
``<root>/metrics/NAME/test.json`` and ``verdict.json``, the plots under ``<root>/plots/NAME/``
(``<root>``: ``.`` for the default experiments, ``zoo/paper`` or ``zoo/cpu`` for a zoo set), and logs them into the MLflow run that
trained the model. Exit status: 0 accepted (or rejected with ``evaluate.warn_only: true``, after a
warning); 1 rejected; 2 bad or missing input (the message names the file).
Without an ``evaluate`` section the defaults of ``EvaluateConfig`` apply.
"""
from __future__ import annotations

import argparse
import sys

from components.backend import BackendError, activate_backend, resolve_backend
from components.config import ConfigError, from_dict, load_params
from components.console import quiet_console, start_tensorflow
from components.evaluation import EvaluateConfig, EvaluationError
from components.experiments import catalogue, resolve
from components.tracking import TrackingError

EXIT_REJECTED, EXIT_BAD_INPUT = 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="a name under experiments, zoo or zoo_cpu in the params file")
    parser.add_argument("--params", default="params.yaml", help="params file (sections 'train' and 'evaluate')")
    parser.add_argument("--verbose", action="store_true",
                        help="show everything the libraries print (TensorFlow's start-up and C++ log included)")
    args = parser.parse_args(argv)
    quiet_console(args.verbose)
    try:
        params = load_params(args.params)
        config = from_dict(EvaluateConfig, params.get("evaluate"), where=f"{args.params}:evaluate")
        experiments = catalogue(params, args.params)
        spec = resolve(args.experiment, params, args.params)
        # The backend before Keras is imported; TensorFlow's start only now, so bad input above
        # fails without waiting for it.
        if activate_backend(resolve_backend(config.backend, f"{args.params}:evaluate.backend")) == "tensorflow":
            start_tensorflow(args.verbose)
        from components.evaluation.evaluate import evaluate_experiment

        result = evaluate_experiment(spec, config, experiments)
    except (BackendError, ConfigError, EvaluationError, TrackingError) as error:
        print(f"evaluate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return report(result, spec.name, config)


def report(result: dict, experiment: str, config: EvaluateConfig) -> int:
    """Print a short summary of ``result``; return the exit status its verdict calls for."""
    from components.evaluation.verdict import ACCEPTED, rejection_message

    m, verdict, paths = result["metrics"], result["verdict"], result["paths"]
    print(f"{experiment}: {m['model']} on {m['dataset']}: accuracy {m['accuracy']:.4f}, "
          f"top-{m['top_k']} {m['top5_accuracy']:.4f}, loss {m['loss']:.4f}, ECE {m['ece']:.4f}, "
          f"macro F1 {m['macro_f1']:.4f}")
    print(f"  {m['images_per_s']:.0f} images/s at batch {config.batch_size}, "
          f"latency {m['latency_ms']:.2f} ms at batch 1, {m['params']:,} parameters, "
          f"{m['size_bytes'] / 1e6:.2f} MB on disk")
    print(f"  metrics: {paths.test_metrics}; verdict: {paths.verdict}; plots: {paths.plots_dir}")
    for check in verdict["checked"]:
        if check.get("skipped"):
            print(f"  note: {check['check']} not checked: {check['skipped']}")
    if verdict["status"] == ACCEPTED:
        alias = " and now holds the MLflow alias 'champion'" if result["promoted"] else ""
        print(f"  verdict: accepted{alias}")
        return 0
    message = rejection_message(verdict, experiment, str(paths.verdict))
    if config.warn_only:
        print(f"evaluate: warning (evaluate.warn_only is true, not failing): {message}", file=sys.stderr)
        return 0
    print(f"evaluate: {message}", file=sys.stderr)
    return EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
