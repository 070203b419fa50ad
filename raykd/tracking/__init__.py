"""Experiment tracking: the metrics of a run dir's training and eval runs, in TensorBoard event
files (by default), MLflow and W&B (the ``tracking`` section; the Ray adapters that feed them
are ``raykd.on_ray.tracking`` for Ray Train and ``raykd.tuning.loggers`` for Ray Tune)."""

from raykd.tracking.points import PER_STEP, eval_points, flat_params, metric_name, report_points
from raykd.tracking.runs import TRACKING, TrackedRun, require_extras

__all__ = [
    "PER_STEP",
    "TRACKING",
    "TrackedRun",
    "eval_points",
    "flat_params",
    "metric_name",
    "report_points",
    "require_extras",
]
