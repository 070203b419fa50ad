"""A tracked run of a run dir: where its trackers write, and the check that their packages are
installed before any stage work.

Layout (``<run>/tracking/``, beside ``checkpoints/`` and, like it, outside the stages' staging:
tracking survives a failed or interrupted stage, and a relaunch appends to it):

- ``tensorboard/<name>/``: one TensorBoard run per tracked run;
- ``mlflow/mlflow.db`` (+ ``artifacts/``): the embedded MLflow store, when no tracking_uri;
- ``wandb/``: W&B's run folders (offline runs for a later ``wandb sync``).

A tracked run is named as its training's checkpoints (``train-<fingerprint>``): a relaunch of
the same config continues it, a changed config starts another. On a remote run dir (s3://) the
trackers write to a local folder, copied into ``<run>/tracking`` by ``publish``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

from raykd.config import ConfigError, TrackingSection
from raykd.run_dir import RunDir
from raykd.tracking.trackers import MlflowTracker, TensorBoardTracker, Trackers, WandbTracker

log = logging.getLogger(__name__)

TRACKING = "tracking"
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def require_extras(section: TrackingSection) -> None:
    """A one-line ConfigError naming the key and the extra when a tracker's package is missing."""
    needs: list[tuple[str, tuple[str, ...], str]] = []
    if section.tensorboard:
        needs.append(
            (
                "tracking.tensorboard",
                ("tensorboardX",),
                "needs tensorboardX (pip install tensorboardX), or set tracking.tensorboard=false",
            )
        )
    if section.mlflow is not None:
        uri = section.mlflow.tracking_uri
        # MLflow's SQL stores (the embedded default is SQLite) need its database packages.
        sql = uri is None or uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES
        modules = ("mlflow", "sqlalchemy", "alembic") if sql else ("mlflow",)
        extra = "needs the mlflow extra (pip install 'raykd[mlflow]')"
        needs.append(("tracking.mlflow", modules, extra))
    if section.wandb is not None:
        needs.append(
            ("tracking.wandb", ("wandb",), "needs the wandb extra (pip install 'raykd[wandb]')")
        )
    for key, modules, why in needs:
        # Found, not imported: the check costs nothing on the driver (MLflow imports in 1 s).
        if any(importlib.util.find_spec(m) is None for m in modules):
            raise ConfigError(f"{key}: {why}")


@dataclass(frozen=True)
class TrackedRun:
    """One tracked run: its name and destinations (picklable: Ray Train's controller opens its
    trackers on the driver's node, where ``root`` is)."""

    section: TrackingSection
    run_uri: str
    name: str
    root: str  # <run>/tracking, or the local folder that ``publish`` copies there
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        section: TrackingSection,
        run: RunDir,
        name: str,
        params: dict[str, Any] | None = None,
    ) -> TrackedRun | None:
        """The tracked run ``name`` of ``run``; None when the section turns every tracker off."""
        if not (section.tensorboard or section.mlflow or section.wandb):
            return None
        require_extras(section)
        if run.is_local:
            root = os.path.abspath(run.path(TRACKING))
        else:  # created by the first tracker that writes: a stage failing earlier leaves none
            root = os.path.join(tempfile.gettempdir(), f"raykd-tracking-{uuid.uuid4().hex[:12]}")
        return cls(section, run.uri, name, root, dict(params or {}))

    def trackers(self, *, resumable: bool) -> Trackers:
        """Open the section's trackers (``resumable``: training, see ``TensorBoardTracker``)."""
        s, out = self.section, []
        if s.tensorboard:
            folder = os.path.join(self.root, "tensorboard", self.name)
            out.append(TensorBoardTracker(folder, resumable=resumable))
        if s.mlflow is not None:
            out.append(MlflowTracker(s.mlflow, self.root, self.run_uri, self.name, self.params))
        if s.wandb is not None:
            out.append(WandbTracker(s.wandb, self.root, self.run_uri, self.name, self.params))
        return Trackers(out)

    def publish(self) -> None:
        """Copy what the trackers wrote into a remote run dir's ``tracking/`` (a local run dir
        already holds it), then drop the local folder."""
        import pyarrow.fs as pafs

        run = RunDir.open(self.run_uri)
        if run.is_local or not os.path.isdir(self.root):
            return
        try:
            if any(files for _, _, files in os.walk(self.root)):
                dest = run.path(TRACKING)
                run.fs.create_dir(dest, recursive=True)
                pafs.copy_files(self.root, dest, destination_filesystem=run.fs)
                log.info("tracking: copied %s to %s", self.root, run.uri_of(TRACKING))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
