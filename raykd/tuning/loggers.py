"""Tracking a sweep: Ray Tune's own logger callbacks, one TensorBoard run, MLflow run and W&B
run per trial, each with the trial's sampled values as its hyperparameters.

Where they write: TensorBoard (and offline W&B) into each trial's folder of the experiment,
``<run>/tune/sweep/<trial>/``, which Tune syncs to the run dir; MLflow into the run dir's
store, as the stages do. A trial's own stages log TensorBoard only (``trial_tracking``): its
train stage's per-step curves go to ``<run>/tune/trials/<id>/tracking/tensorboard/``, and the
MLflow and W&B runs of the trial are the sweep's.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

from raykd.config import TrackingSection
from raykd.run_dir import RunDir
from raykd.tracking import TRACKING, metric_name, require_extras
from raykd.tracking.trackers import RUN_DIR_TAG, mlflow_experiment, mlflow_uri


def trial_tracking(section: TrackingSection) -> TrackingSection:
    """``section`` for a stage's own trackers: TensorBoard only inside a Tune trial, whose
    MLflow and W&B runs are the sweep's logger callbacks'."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    if _in_tune_session():
        return section.model_copy(update={"mlflow": None, "wandb": None})
    return section


def tune_loggers(section: TrackingSection, run: RunDir) -> list:
    """The Tune logger callbacks that ``section`` turns on, for a sweep in ``run``."""
    from ray.tune.logger import TBXLoggerCallback

    require_extras(section)
    out: list = []
    if section.tensorboard:  # Tune adds it anyway unless TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1
        out.append(TBXLoggerCallback())
    if section.mlflow is not None:
        out.append(_mlflow_logger(section, run))
    if section.wandb is not None:
        out.append(_wandb_logger(section))
    return out


def _mlflow_logger(section: TrackingSection, run: RunDir):
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowLogger(MLflowLoggerCallback):
        """Metric names as the stages' trackers write them: MLflow rejects the '@' of nDCG@10,
        and the failed write would end the sweep."""

        def log_trial_result(self, iteration: int, trial, result: dict[str, Any]) -> None:
            super().log_trial_result(
                iteration, trial, {metric_name(k): v for k, v in result.items()}
            )

    spec = section.mlflow
    root = run.path(TRACKING)  # a local run dir: the config checks say so for the default store
    uri = mlflow_uri(spec, root)
    # Created here with its artifact folder in the run dir (Ray would create it elsewhere).
    mlflow_experiment(MlflowClient(tracking_uri=uri), spec, root)
    return MLflowLogger(
        tracking_uri=uri, experiment_name=spec.experiment, tags={RUN_DIR_TAG: run.uri}
    )


def _wandb_logger(section: TrackingSection):
    from ray.air.integrations.wandb import WandbLoggerCallback

    spec = section.wandb

    class WandbLogger(WandbLoggerCallback):
        """Ray asks for an API key unless WANDB_MODE says offline; an offline run needs none."""

        def setup(self, *args, **kwargs) -> None:
            with _env("WANDB_MODE", self.kwargs.get("mode") or "online"):
                super().setup(*args, **kwargs)

    return WandbLogger(project=spec.project, mode=spec.mode)


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
