"""Tune: the run-dir overlay, trial helpers, and a 2-trial ASHA sweep on the demo collection."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.config import JobConfig, load_config
from raykd.run_dir import RunDir
from raykd.stages.tune import EXPERIMENT, max_concurrent, shared_paths, trial_config

# --- overlay -----------------------------------------------------------------------------------


def test_overlay_reads_inherited_paths_from_base_and_writes_locally(tmp_path):
    base = RunDir.open(str(tmp_path / "base"))
    base.fs.create_dir(base.path("scores"))
    pq.write_table(pa.table({"x": [1]}), base.path("scores/part-0.parquet"))
    base.write_json("manifests/score.json", {"fingerprint": "abc"})
    base.fs.create_dir(base.path("checkpoints"))
    trial = RunDir.open(
        str(tmp_path / "base/tune/trials/t1"),
        base=base,
        inherit=("scores", "manifests/score.json"),
    )
    assert trial.exists("scores") and trial.path("scores") == base.path("scores")
    assert trial.uri_of("scores/part-0.parquet") == base.uri_of("scores/part-0.parquet")
    assert trial.read_json("manifests/score.json") == {"fingerprint": "abc"}
    # Not inherited: stays the trial's own (train checkpoints must not land in the base).
    assert not trial.exists("checkpoints")
    assert trial.uri_of("checkpoints").startswith(trial.uri)
    assert not trial.exists("manifests/build.json")
    # Writes go to the trial, and then shadow the base.
    trial.write_json("manifests/score.json", {"fingerprint": "trial"})
    assert base.read_json("manifests/score.json") == {"fingerprint": "abc"}
    assert trial.read_json("manifests/score.json") == {"fingerprint": "trial"}
    staging = trial.new_staging("build")
    pq.write_table(pa.table({"y": [2]}), staging.local_path("scores/part-0.parquet"))
    staging.commit("scores")
    staging.discard()
    assert trial.path("scores").startswith(trial.root)
    assert pq.read_table(base.path("scores")).column_names == ["x"]
    trial.delete("manifests/score.json")
    assert base.exists("manifests/score.json")  # a trial never deletes from its base


def test_overlay_needs_the_base_filesystem(tmp_path):
    base = RunDir.open(str(tmp_path / "base"))
    with pytest.raises(ValueError, match="filesystem of its base"):
        RunDir.open("mock://somewhere", base=base)


# --- trial helpers -----------------------------------------------------------------------------


def test_shared_paths_are_everything_before_build():
    paths = shared_paths(JobConfig())
    for rel in ("corpus", "queries", "qrels", "pool", "examples", "scores"):
        assert rel in paths
    assert "manifests/score.json" in paths and "manifests/prepare.json" in paths
    assert not any(p.startswith(("train", "student", "checkpoints")) for p in paths)
    assert "manifests/build.json" not in paths


def test_trial_config_applies_values_and_evaluates_only_the_student():
    cfg = trial_config(JobConfig(), {"candidates.m": 7}, "/tmp/t1", "/tmp/dev.json")
    assert cfg.candidates.m == 7 and cfg.run_dir == "/tmp/t1"
    assert cfg.tune.dev_set == "/tmp/dev.json" and cfg.eval.systems == ["student"]


def test_max_concurrent_from_cluster_resources():
    tr = JobConfig().train.model_copy(update={"num_workers": 1, "cpus_per_worker": 0.5})
    assert max_concurrent({"CPU": 2.0}, tr) == 1  # a data CPU per trial
    assert max_concurrent({"CPU": 16.0}, tr) == 10
    gpu = tr.model_copy(update={"num_workers": 2, "use_gpu": True, "cpus_per_worker": 4})
    assert max_concurrent({"CPU": 96.0, "GPU": 8.0}, gpu) == 4
    assert max_concurrent({"CPU": 1.0}, tr) == 1  # never zero


def test_workers_name_their_own_cluster(ray_session):
    """Workers get RAY_ADDRESS naming this Ray, so the State API in them (Ray Train's placement
    group cleaner) needs no search of the machine, where other Rays may run."""
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Probe:
        def address(self):
            return os.environ.get("RAY_ADDRESS")

        def state_of_self(self):
            from ray.util.state import get_actor

            return get_actor(ray.get_runtime_context().get_actor_id(), timeout=20).state

    probe = Probe.remote()
    assert ray.get(probe.address.remote()) == ray.get_runtime_context().gcs_address
    assert ray.get(probe.state_of_self.remote()) == "ALIVE"


# --- the sweep ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.ray
def test_two_trial_sweep_with_asha(ray_session, demo_config, tmp_path):
    """A grid of 2 learning rates under ASHA over shared scores: an early stop, the per-trial
    and per-point results, a runnable best.yaml. (Repeats of a grid point on distinct seeds,
    and their means: tests/test_tune_repeats.py, without Ray.)"""
    from raykd.stages.pipeline import run_pipeline
    from raykd.stages.tune import run_tune

    space = tmp_path / "space.yaml"
    # 1e-5 barely moves the student in an epoch: trials run one at a time here, in grid order,
    # so ASHA (grace 1, factor 2) stops the second at epoch 1, behind the first.
    space.write_text("train.lr: {grid: [1.0e-3, 1.0e-5]}\n")
    raw = demo_config.model_dump(mode="json")
    raw["run_dir"] = str(tmp_path / "run")
    raw["eval"]["systems"] = ["student"]
    raw["train"].update({"epochs": 2, "report_every": 1000, "batch_size": 8, "seed": 5})
    raw["candidates"]["seed"] = 3
    raw["tune"].update(
        {
            "num_samples": 1,
            "grace_period": 1,
            "reduction_factor": 2,
            "search": "random",
            "dev_queries": 20,
            "dev_depth": 20,
            "metric": "nDCG@10",
        }
    )
    cfg = JobConfig.model_validate(raw)
    run = RunDir.open(cfg.run_dir)
    start = time.perf_counter()
    summary = run_tune(cfg, run, str(space))
    print(f"sweep wall time {time.perf_counter() - start:.1f} s")

    rows = summary.rows
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert all(r["nDCG@10"] is not None and 0.0 <= r["nDCG@10"] <= 1.0 for r in rows)
    assert all(1 <= r["best_epoch"] <= r["epochs"] <= 2 for r in rows)
    assert min(r["epochs"] for r in rows) < 2, "ASHA stopped no trial early"
    assert rows[0]["nDCG@10"] == max(r["nDCG@10"] for r in rows)
    assert [(r["train.lr"], r["epochs"]) for r in rows] == [(1e-3, 2), (1e-5, 1)]
    for r in rows:
        trial = RunDir.open(run.uri_of(f"tune/trials/{r['trial']}"))
        job = load_config(trial.path("job.yaml"))
        # One sample of a grid: each trial on the job's seeds (read back from its job.yaml).
        assert (job.train.seed, job.candidates.seed) == (5, 3)
        assert job.train.lr == r["train.lr"]
        # Teacher scores came from the base: no trial dir holds its own. A trial that ran every
        # epoch ends with its student and its full eval (ASHA's max_t is past the last epoch).
        assert not trial.exists("scores")
        if r["epochs"] == 2:
            assert trial.exists("student") and "student" in trial.read_json("metrics.json")
    # Each trial is a TensorBoard run of Tune's (its dev metric, per epoch); a trial that ran
    # every epoch has its train stage's per-step curves in its own folder (ASHA can kill a
    # stopped trial before Ray Train's controller has handed its first report to the trackers).
    sweep = Path(run.path(f"tune/{EXPERIMENT}"))
    for r in rows:
        (folder,) = [p for p in sweep.iterdir() if p.is_dir() and r["trial"] in p.name]
        assert list(folder.glob("events.out.tfevents.*")), folder
        curves = Path(run.path(f"tune/trials/{r['trial']}/tracking/tensorboard"))
        if r["epochs"] == 2:
            assert list(curves.glob("train-*/events.out.tfevents.*")), curves

    # One row per rate, the best first (one trial each: its metric, no spread).
    assert [(p["train.lr"], p["n"], p["failed"]) for p in summary.points] == [
        (1e-3, 1, 0),
        (1e-5, 1, 0),
    ]
    assert [p["mean"] for p in summary.points] == [r["nDCG@10"] for r in rows]
    assert all(p["std"] is None for p in summary.points)

    with open(run.path("tune/results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == [r["trial"] for r in rows]
    md = open(run.path("tune/results.md")).read()
    assert "| trial | train.lr | nDCG@10 | best_epoch | epochs | status |" in md
    with open(run.path("tune/points.csv")) as f:
        assert [float(r["train.lr"]) for r in csv.DictReader(f)] == [1e-3, 1e-5]

    # best.yaml: the best trial's rate, on the job's seeds, in a fresh run dir.
    text = open(run.path("tune/best.yaml")).read()
    assert text.startswith(f"# Best trial {rows[0]['trial']} of the sweep")
    best = load_config(run.path("tune/best.yaml"))
    assert best.train.lr == summary.points[0]["train.lr"]
    assert (best.train.seed, best.candidates.seed) == (5, 3)
    assert best.run_dir == run.uri_of("tune/best_run") and best.tune.dev_set is None
    # The best config runs. Over the base's outputs (as a trial reads them), its stages up to
    # score are current, so a fresh run would compute the same teacher scores; build runs in its
    # own dir. (Its train section is the best trial's, which trained above.)
    best_run = RunDir.open(best.run_dir, base=run, inherit=shared_paths(best))
    assert run_pipeline(best, best_run, until="build") == ["build"]
    train_set = f"train/{best.candidates.strategy}"
    assert best_run.exists(train_set) and best_run.path(train_set).startswith(best_run.root)
