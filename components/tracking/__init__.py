"""MLflow at the edge: where runs are recorded, and checks that the store is reachable.

Only stage scripts and the training/evaluation orchestration import this package;
models and data code never do, and no other module of components/ or pipeline/
imports MLflow. Its modules: ``store`` (the tracking URI), ``runs`` (the train stage's
run), ``logged_model`` (the model as an MLflow 3 LoggedModel, and the one MLflow
workaround), ``datasets`` (the splits as MLflow data sets), ``metrics`` (metrics of a
model on a data set), ``registry`` (the evaluate stage's results and the ``champion``
alias), ``lookups`` (read-only questions, all the report needs), ``views`` (what the UI
shows, and its addresses).
"""
from components.tracking.store import TrackingError, configure_tracking, default_tracking_uri, project_root

__all__ = ["TrackingError", "configure_tracking", "default_tracking_uri", "project_root"]
