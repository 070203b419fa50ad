"""Forwarding a training run's epoch metrics to Ray Tune (Ray Train V2 + function trainable)."""

from __future__ import annotations

import logging
from typing import Any

from raykd.config import JobConfig
from raykd.tracking import PER_STEP

log = logging.getLogger(__name__)

# The train loop task of a run with tune.dev_set: the student plus the per-epoch dev metric.
DEV_STUDENT_TASK = "raykd.tuning.dev_metric:dev_student_task"


def _epoch_callback(metric: str):
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReportCallback(TuneReportCallback):
        """Forwards only the reports that carry ``metric`` (one per epoch), so Tune's
        training_iteration counts epochs and every result ASHA sees has the metric."""

        def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
            if metric in metrics[0]:
                # The per-step records are the trackers' (raykd.on_ray.tracking), not a result.
                metrics = [{k: v for k, v in m.items() if k != PER_STEP} for m in metrics]
                super().after_report(run_context, metrics, checkpoint)

    return EpochReportCallback()


def tune_callbacks(cfg: JobConfig) -> list:
    """Ray Train run callbacks for ``cfg``'s train stage: the Tune forwarder inside a trial."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    if cfg.tune.dev_set is None or not _in_tune_session():
        return []
    return [_epoch_callback(cfg.tune.metric)]


def trial_progress(metric: str):
    """A Tune callback (run in the driver) that counts finished trials on the live bar and tells
    the console each trial's end: its last ``metric``, or its error. It looks the bar up when
    called: the Tuner pickles its callbacks, and a bar holds a lock."""
    from ray.tune import Callback

    from raykd.console import STORY, current

    def count() -> None:
        bar = current()
        if bar is not None:
            bar.update(1)

    class TrialProgress(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            count()
            value = (trial.last_result or {}).get(metric)
            shown = f"{metric} {value:.4f}" if isinstance(value, float) else "no metric"
            log.info("tune: trial %s ended (%s)", trial.trial_id, shown, extra=STORY)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            count()
            log.warning("tune: trial %s failed (its error: the sweep's results)", trial.trial_id)

    return TrialProgress()
