"""Stage ``train``: train one experiment of params.yaml, tracked in MLflow.

    python -m pipeline.train --experiment fashion_mnist-airbench_small [--params params.yaml] [--no-tracking] [--verbose]

Restarted after an interruption (even ``kill -9``), the same command continues from the
last completed epoch.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from components.console import quiet_console, start_tensorflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="a name under 'experiments', 'zoo' or 'zoo_cpu' in params")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (overrides train.tracking)")
    parser.add_argument("--verbose", action="store_true",
                        help="show everything the libraries print (TensorFlow's start-up and C++ log included)")
    args = parser.parse_args(argv)
    quiet_console(args.verbose)

    from components.backend import BackendError, activate_backend, resolve_backend
    from components.config import ConfigError
    from components.training.config import load_train_settings

    try:  # the backend first: Keras fixes it when first imported
        settings = load_train_settings(args.params)
        backend = activate_backend(resolve_backend(settings.backend, "train.backend"), settings.deterministic)
    except (ConfigError, BackendError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 1
    if backend == "tensorflow":
        start_tensorflow(args.verbose)  # before the imports below load it

    from components.data import DataError
    from components.models import ModelConfigError
    from components.training.config import load_experiment
    from components.training.distribute import is_chief
    from components.training.trainer import TrainingError

    try:
        experiment, settings = load_experiment(args.experiment, args.params)
        tracking = settings.tracking and not args.no_tracking and is_chief()
        if tracking:
            from components.tracking import configure_tracking

            configure_tracking()  # fails fast when the server is unreachable
        _train(experiment, settings, tracking=tracking)
        if is_chief():
            write_dvc_records(experiment.paths)
        return 0
    except (ConfigError, DataError, ModelConfigError, TrainingError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        from components.tracking import TrackingError

        if isinstance(error, TrackingError):
            print(f"train: error: {error}", file=sys.stderr)
            return 1
        raise


def write_dvc_records(paths) -> None:
    """Copy the published model directory's summary and history to where ``dvc.yaml`` declares
    the stage's metrics and plots (DVC cannot declare files inside an output directory)."""
    from components.training.callbacks import write_atomically

    for source, target in ((paths.train_summary, paths.train_metrics), (paths.model_history, paths.history)):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, source.read_bytes())


def _train(experiment, settings, tracking: bool) -> int:
    from components.config import to_dict
    from components.training.trainer import input_config, resumable_run_id, train_experiment

    if not tracking:
        train_experiment(experiment, settings)
        return 0
    from components.tracking.runs import (MlflowEpochLogger, backfill_epochs, log_run_inputs, log_run_outputs,
                                          training_run)

    from components.inputs.shards import check_prepared

    # Cheap checks first, so a data set that is not prepared makes no MLflow run at all.
    check_prepared(experiment.paths.data, ("train", "validation"), mode="none")
    previous_run = resumable_run_id(experiment, settings)
    with training_run(experiment.dataset, experiment.name, previous_run) as run:
        if previous_run is None:
            # The effective input config: the one the trainer builds its data sets with.
            config = {"experiment": experiment.name, "dataset": experiment.dataset, "model": experiment.model,
                      "recipe_name": experiment.recipe_name, "recipe": to_dict(experiment.recipe),
                      "model_hparams": experiment.model_hparams, "input": to_dict(input_config(experiment, settings)),
                      "train": {k: v for k, v in to_dict(settings).items() if k != "input"}}
            log_run_inputs(config, experiment.paths.data, experiment.dataset, stage=experiment.train_stage or f"train@{experiment.name}")
        registered = experiment.registered_model_name if settings.register_model else None

        def record_in_mlflow(staged_dir: pathlib.Path, metrics: dict) -> dict:
            # On the assembled directory, before the trainer renames it into place: the run id,
            # LoggedModel id and registered version are in train_metrics.json when it is published.
            return log_run_outputs(staged_dir, metrics, registered, data_dir=experiment.paths.data)

        result = train_experiment(experiment, settings, callbacks=[MlflowEpochLogger()],
                                  extra_state={"mlflow_run_id": run.info.run_id},
                                  resume_state=lambda state: backfill_epochs(run.info.run_id, state["history"]),
                                  before_publish=record_in_mlflow)
        version = result.metrics["registered_model_version"]
        print(f"[mlflow] run {run.info.run_id}, model {result.metrics.get('mlflow_model_id')}"
              + (f", registered {registered} version {version}" if version else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
