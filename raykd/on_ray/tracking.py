"""Ray Train reports to the trackers: a ``UserCallback`` on Ray Train's controller.

The controller runs on the driver's node (Ray Train V2 places it there), so the trackers write
where the driver chose: the run dir, or the local folder it publishes to a remote run dir.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.train import UserCallback

from raykd.tracking import TrackedRun, report_points

log = logging.getLogger(__name__)


class TrackingCallback(UserCallback):
    """Rank 0's report of each ``ray.train.report`` -> one point per optimizer step (the loop's
    per-step records) and the epoch's dev metric. The trackers open at the first report (a
    relaunch purges the steps it repeats, ``TensorBoardTracker``), flush after every report and
    close after the report of ``last_step``, the run's last."""

    def __init__(self, tracked: TrackedRun, *, last_step: int, prefix: str = "train") -> None:
        self.tracked = tracked
        self.last_step = last_step
        self.prefix = prefix
        self._trackers = None  # opened on the controller, not pickled with the callback

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if self._trackers is None:
            self._trackers = self.tracked.trackers(resumable=True)
        report = metrics[0]
        for step, values in report_points(report, self.prefix):
            self._trackers.log(values, step)
        self._trackers.flush()
        if report.get("step") == self.last_step and checkpoint is not None:
            self._trackers.close()
            self._trackers = None

    def after_exception(self, run_context, worker_exceptions) -> None:
        # Ray Train may restart the workers from a checkpoint: keep the trackers open.
        if self._trackers is not None:
            self._trackers.flush()
