"""MLflow at the edge: where runs are recorded, and checks that the store is reachable.

Only stage scripts and the training/evaluation orchestration import this package;
models and data code never do.
"""
from components.tracking.store import DEFAULT_TRACKING_URI, TrackingError, configure_tracking

__all__ = ["DEFAULT_TRACKING_URI", "TrackingError", "configure_tracking"]
