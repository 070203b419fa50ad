"""Fault tolerance of the train stage, with a real worker kill: a restart from a mid-epoch
checkpoint. (A stopped job that relaunches from its epoch checkpoint, and a lost training node:
tests/cluster/test_jobs.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raykd.run_dir import RunDir
from raykd.stages.pipeline import run_stage, stage_by_name
from tests.test_train import train_config
from tests.train_helpers import WorkerKiller, write_train_set

pytestmark = pytest.mark.slow


def registered_steps(run: RunDir) -> list[int]:
    """Steps of the checkpoints Ray Train has registered (its checkpoint manager snapshot)."""
    steps = []
    for snap in Path(run.path("checkpoints")).glob("*/checkpoint_manager_snapshot.json"):
        for r in json.loads(snap.read_text())["checkpoint_results"]:
            steps.append(int(r["metrics"]["step"]))
    return sorted(steps)


def test_worker_killed_mid_epoch_restarts_from_checkpoint(
    ray_session, demo_config, prepared_run, tmp_path
):
    cfg = train_config(
        demo_config,
        tmp_path / "run",
        num_workers=2,
        zero_stage=1,
        epochs=1,
        batch_size=2,
        checkpoint_every_steps=5,
        max_failures=1,
        report_every=5,
    )
    run = RunDir.open(cfg.run_dir)
    n = write_train_set(prepared_run, run, "topk")
    steps = n // 2
    # Steps 5 to 40 take about 1.5 s here, so the kill must come fast (see WorkerKiller).
    killer = WorkerKiller(lambda: registered_steps(run))
    killer.start()
    try:
        assert run_stage(stage_by_name("train"), cfg, run)
    finally:
        killer.stop()
    assert killer.killed, "no worker was killed"
    info = run.read_json("manifests/train.json")["info"]
    # FailureConfig restarted the workers from a mid-epoch checkpoint, not from step 0.
    seen = killer.trigger  # the checkpoints registered when the worker was killed
    assert seen[-1] <= info["start_step"] < steps and info["start_step"] % 5 == 0, (info, seen)
    assert info["step"] == steps
    assert run.exists("student")
