"""Stage ``train``: train one experiment of params.yaml, tracked in MLflow.

    python -m pipeline.train --experiment fashion_mnist-lenet5 [--params params.yaml] [--no-tracking]

Restarted after an interruption (even ``kill -9``), the same command continues from the
last completed epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="a name under 'experiments' or 'zoo' in params")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (overrides train.tracking)")
    args = parser.parse_args(argv)

    from components.config import ConfigError
    from components.data import DataError
    from components.models import ModelConfigError
    from components.training.config import load_experiment
    from components.training.distribute import is_chief
    from components.training.trainer import TrainingError

    try:
        experiment, settings = load_experiment(args.experiment, args.params)
        tracking = settings.tracking and not args.no_tracking and is_chief()
        if not tracking:
            return _train(experiment, settings, tracking=False)
        from components.tracking import configure_tracking

        configure_tracking()  # fails fast when the server is unreachable
        return _train(experiment, settings, tracking=True)
    except (ConfigError, DataError, ModelConfigError, TrainingError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        from components.tracking import TrackingError

        if isinstance(error, TrackingError):
            print(f"train: error: {error}", file=sys.stderr)
            return 1
        raise


def _train(experiment, settings, tracking: bool) -> int:
    from components.config import to_dict
    from components.training.callbacks import write_atomically
    from components.training.trainer import input_config, resumable_run_id, train_experiment

    if not tracking:
        train_experiment(experiment, settings)
        return 0
    from components.tracking.runs import (MlflowEpochLogger, backfill_epochs, log_run_inputs, log_run_outputs,
                                          training_run)

    from components.inputs import check_prepared

    # Cheap checks first, so a data set that is not prepared makes no MLflow run at all.
    check_prepared(pathlib.Path(settings.data_root) / experiment.dataset, ("train", "validation"), mode="none")
    previous_run = resumable_run_id(experiment, settings)
    with training_run(experiment.dataset, experiment.name, previous_run) as run:
        if previous_run is None:
            config = {"experiment": experiment.name, "dataset": experiment.dataset, "model": experiment.model,
                      "recipe_name": experiment.recipe_name, "recipe": to_dict(experiment.recipe),
                      "model_hparams": experiment.model_hparams, "input": to_dict(input_config(experiment, settings)),
                      "train": {k: v for k, v in to_dict(settings).items() if k != "input"}}
            data_dir = pathlib.Path(settings.data_root) / experiment.dataset
            log_run_inputs(config, data_dir, experiment.dataset, stage=f"train@{experiment.name}")
        result = train_experiment(experiment, settings, callbacks=[MlflowEpochLogger()],
                                  extra_state={"mlflow_run_id": run.info.run_id},
                                  resume_state=lambda state: backfill_epochs(run.info.run_id, state["history"]))
        registered = f"{experiment.dataset}-{experiment.model}" if settings.register_model else None
        metrics_path = result.model_dir / "train_metrics.json"
        metrics = {**json.loads(metrics_path.read_text()), "mlflow_run_id": run.info.run_id,
                   "registered_model_name": registered}
        write_atomically(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
        version = log_run_outputs(result.model_dir, registered)
        metrics["registered_model_version"] = version
        write_atomically(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
        print(f"[mlflow] run {run.info.run_id}" + (f", registered {registered} version {version}" if version else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
