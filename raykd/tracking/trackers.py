"""The trackers: a TensorBoard run folder (tensorboardX), an MLflow run, a W&B run. Each logs
``{name: value}`` at an optimizer step; ``Trackers`` drives the ones a config turns on."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any

from raykd.config import MlflowSpec, WandbSpec

log = logging.getLogger(__name__)

# Tags that find a raykd run's MLflow run again (a relaunch, the eval after train).
RUN_DIR_TAG = "raykd.run_dir"
RUN_TAG = "raykd.run"


class TensorBoardTracker:
    """Event files in one TensorBoard run folder.

    With ``resumable`` (training), the first point, and any point that goes back to a step
    already logged (a worker group restarted from its last checkpoint), opens a new event file
    that purges the folder's points from that step on: a relaunch continues its curves instead
    of drawing the repeated steps twice.
    """

    def __init__(self, folder: str, *, resumable: bool) -> None:
        self.folder = folder
        self.resumable = resumable
        self.writer = None
        self.last = -1
        self.at_last: set[str] = set()

    def _open(self, purge_step: int | None) -> None:
        from tensorboardX import SummaryWriter

        if self.writer is not None:
            self.writer.close()
        # Event files sort by name in the folder, and a purge applies to the files before its
        # own: a nanosecond suffix orders two files opened within the same second.
        self.writer = SummaryWriter(
            self.folder,
            purge_step=purge_step,
            filename_suffix=f".{time.time_ns():020d}.{os.getpid()}",
        )

    def log(self, values: dict[str, float], step: int) -> None:
        repeated = step < self.last or (step == self.last and not self.at_last.isdisjoint(values))
        if self.writer is None or (self.resumable and repeated):
            self._open(step if self.resumable else None)
            self.last, self.at_last = step, set()
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)
        if step > self.last:
            self.last, self.at_last = step, set()
        self.at_last.update(values)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def mlflow_uri(spec: MlflowSpec, root: str) -> str:
    """``spec``'s tracking URI; the embedded default is a SQLite store in ``root``/mlflow."""
    if spec.tracking_uri:
        return spec.tracking_uri
    os.makedirs(os.path.join(root, "mlflow"), exist_ok=True)
    return f"sqlite:///{os.path.join(os.path.abspath(root), 'mlflow', 'mlflow.db')}"


def mlflow_experiment(client, spec: MlflowSpec, root: str) -> str:
    """The id of ``spec.experiment``, created if absent (with the embedded store, its artifacts
    go beside the database rather than in the working directory)."""
    found = client.get_experiment_by_name(spec.experiment)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if spec.tracking_uri is None:
        artifacts = "file://" + os.path.join(os.path.abspath(root), "mlflow", "artifacts")
    return client.create_experiment(spec.experiment, artifact_location=artifacts)


class MlflowTracker:
    """One MLflow run, found again by its tags (run dir URI and run name) or created with the
    run's parameters (MLflow's parameters are write-once: a relaunch keeps the first ones)."""

    def __init__(
        self, spec: MlflowSpec, root: str, run_uri: str, name: str, params: dict[str, Any]
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=mlflow_uri(spec, root))
        experiment = mlflow_experiment(self.client, spec, root)
        found = self.client.search_runs(
            [experiment],
            filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_uri}' and tags.`{RUN_TAG}` = '{name}'",
            max_results=1,
        )
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(
            experiment, run_name=name, tags={RUN_DIR_TAG: run_uri, RUN_TAG: name}
        )
        self.run_id = run.info.run_id
        if params:
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def flush(self) -> None:
        """Every log is already a write to the store."""

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def wandb_id(run_uri: str, name: str) -> str:
    """A W&B run id of a raykd run: the same for a relaunch, distinct across run dirs."""
    return hashlib.sha256(f"{run_uri}|{name}".encode()).hexdigest()[:16]


class WandbTracker:
    """One W&B run, resumed by its id; offline runs are written to ``root``/wandb."""

    def __init__(
        self, spec: WandbSpec, root: str, run_uri: str, name: str, params: dict[str, Any]
    ) -> None:
        import wandb

        os.makedirs(root, exist_ok=True)
        self.run = wandb.init(
            project=spec.project,
            mode=spec.mode,
            dir=root,
            id=wandb_id(run_uri, name),
            name=name,
            resume="allow",
            reinit="create_new",  # train and eval, or several runs, in one process
            config=params or None,
            tags=["raykd"],
            # Not the process's console, nor system metrics: this is a metrics logger.
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def flush(self) -> None:
        """W&B's service process writes as it receives."""

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() can return before W&B's service process has written the run file; its
        # teardown waits for that (this process logs one W&B run at a time).
        wandb.teardown()


class Trackers:
    """The trackers of one run, driven together."""

    def __init__(self, trackers: list) -> None:
        self.trackers = trackers

    def log(self, values: dict[str, float], step: int) -> None:
        if values:
            for t in self.trackers:
                t.log(values, step)

    def flush(self) -> None:
        for t in self.trackers:
            t.flush()

    def close(self) -> None:
        for t in self.trackers:
            t.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
