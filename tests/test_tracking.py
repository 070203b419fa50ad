"""Experiment tracking: the report -> points mapping, the trackers (read back with TensorBoard's
reader, MLflow's client and W&B's record format), the Ray Train callback on hand-made reports
(a relaunch, a restarted worker group), eval into the training's run, publishing to S3, the
sweep's Tune loggers, and the error when a tracker's extra is missing.

The callback on a real Ray Train run: tests/test_train.py::test_dark_applies_self_paced_subset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from raykd.config import ConfigError, JobConfig, TrackingSection
from raykd.run_dir import RunDir
from raykd.tracking import PER_STEP, TrackedRun, eval_points, report_points, require_extras
from raykd.training.meter import Meter


def tensorboard_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of a TensorBoard run folder, as TensorBoard loads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def mlflow_run(root: str | Path, name: str):
    """(client, run) of the tracked run ``name`` in the embedded MLflow store under ``root``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(root) / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("raykd")
    runs = client.search_runs([experiment.experiment_id], f"tags.`raykd.run` = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def mlflow_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (LevelDB-log framing: 32 KiB blocks of chunks,
    each a CRC, a length, a type; after W&B's 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # full / first, else middle / last
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def step_report(steps: range, *, epoch: int = 1, loss0: float = 10.0, **extra) -> dict:
    """A report as the train loop sends it: the window's averages and its per-step records."""
    records = [
        {
            "loss": loss0 - s,
            "kd": 1.0,
            "sup": 2.0,
            "kept": 6.0,
            "batch": 8.0,
            "samples_per_s": 100.0,
            "step": s,
            "epoch": epoch,
            "lr": 1e-3 * s,
        }
        for s in steps
    ]
    return {"loss": 1.0, "kept": 6.0, "step": steps[-1], "epoch": epoch, PER_STEP: records, **extra}


# --- the points ---------------------------------------------------------------------------------


def test_report_points_one_per_step_and_the_dev_metric():
    points = report_points(step_report(range(3, 5), **{"nDCG@10": 0.25}))
    assert [s for s, _ in points] == [3, 4, 4]
    assert points[0][1] == {
        "train/loss": 7.0,
        "train/kd": 1.0,
        "train/sup": 2.0,
        "train/kept_ratio": 0.75,
        "train/samples_per_s": 100.0,
        "train/epoch": 1.0,
        "train/lr": pytest.approx(3e-3),
    }
    assert points[2][1] == {"dev/nDCG_10": 0.25}
    # A report of no step (nothing trained since the last one) gives no point.
    assert report_points({"samples_per_s": 0.0, "step": 5, "epoch": 1, "lr": 0.1}) == []


def test_eval_points_name_system_and_measure():
    result = {"systems": ["bm25", "student"], "bm25": {"nDCG@10": 0.5}, "student": {"R@50": 0.9}}
    assert eval_points(result) == {"eval/bm25/nDCG_10": 0.5, "eval/student/R_50": 0.9}


def test_meter_closes_one_record_per_optimizer_step():
    meter = Meter()
    for step, losses in ((1, (4.0, 2.0)), (2, (1.0, 1.0))):  # two micro-batches a step
        for loss in losses:
            meter.add(loss, {"kept": 3.0, "batch": 4.0}, 4)
        meter.end_step(step, 1, 0.5 * step)
    window = meter.flush()
    steps = meter.take_steps()
    assert window["loss"] == 2.0 and window["kept"] == 12.0
    assert [(r["step"], r["loss"], r["kept"], r["batch"], r["lr"]) for r in steps] == [
        (1, 3.0, 6.0, 8.0, 0.5),
        (2, 1.0, 6.0, 8.0, 1.0),
    ]
    assert all(r["samples_per_s"] > 0 for r in steps) and meter.take_steps() == []


# --- the Ray Train callback ---------------------------------------------------------------------


def test_callback_writes_a_point_per_step_and_a_relaunch_continues_the_curves(tmp_path):
    from raykd.on_ray.tracking import TrackingCallback

    run = RunDir.open(str(tmp_path / "run"))
    section = TrackingSection(mlflow={})
    tracked = TrackedRun.open(section, run, "train-abc", {"train.lr": 0.001})
    ckpt = object()  # Ray's Checkpoint: the callback only asks whether there is one

    first = TrackingCallback(tracked, last_step=12)
    first.after_report(None, [step_report(range(1, 5))], None)
    first.after_report(None, [step_report(range(5, 7), **{"nDCG@10": 0.1})], ckpt)
    first.after_report(None, [step_report(range(7, 9))], None)
    first.after_exception(None, {0: RuntimeError("worker lost")})
    # The worker group restarts from the checkpoint at step 6 and repeats steps 7-8.
    first.after_report(None, [step_report(range(7, 9), loss0=100.0)], None)
    # The driver is stopped; a relaunch resumes from the same checkpoint (a new controller).
    again = TrackingCallback(tracked, last_step=12)
    again.after_report(None, [step_report(range(7, 11), loss0=200.0)], None)
    again.after_report(None, [step_report(range(11, 13), loss0=200.0, **{"nDCG@10": 0.3})], ckpt)

    tb = tensorboard_scalars(tmp_path / "run" / "tracking" / "tensorboard" / "train-abc")
    names = {"loss", "kd", "sup", "kept_ratio", "lr", "samples_per_s", "epoch"}
    assert set(tb) == {f"train/{n}" for n in names} | {"dev/nDCG_10"}
    # One point per optimizer step; the repeated steps are the relaunch's.
    assert tb["train/loss"] == [(s, 10.0 - s) for s in range(1, 7)] + [
        (s, 200.0 - s) for s in range(7, 13)
    ]
    assert tb["dev/nDCG_10"] == [(6, pytest.approx(0.1)), (12, pytest.approx(0.3))]
    assert tb["train/kept_ratio"] == [(s, 0.75) for s in range(1, 13)]

    client, found = mlflow_run(tmp_path / "run" / "tracking", "train-abc")
    assert found.info.status == "FINISHED"  # closed after the report of the last step
    assert found.data.params == {"train.lr": "0.001"}
    loss = dict(mlflow_history(client, found.info.run_id, "train/loss"))
    assert sorted(loss) == list(range(1, 13)) and loss[12] == 188.0
    assert mlflow_history(client, found.info.run_id, "dev/nDCG_10")[-1] == (12, 0.3)


def test_eval_logs_into_the_tracked_run_of_the_trained_student(tmp_path):
    from raykd.stages.evaluate import track_eval
    from raykd.stages.pipeline import StageContext

    cfg = JobConfig.model_validate({"run_dir": str(tmp_path / "run"), "tracking": {"mlflow": {}}})
    run = RunDir.open(cfg.run_dir)
    run.write_json("manifests/train.json", {"fingerprint": "f" * 64, "info": {"step": 40}})
    tracked = TrackedRun.open(cfg.tracking, run, f"train-{'f' * 12}", {"train.lr": 0.1})
    with tracked.trackers(resumable=True) as trackers:
        trackers.log({"train/loss": 1.0}, 40)

    result = {"systems": ["bm25", "student"], "bm25": {"nDCG@10": 0.4}, "student": {"nDCG@10": 0.6}}
    ctx = StageContext(cfg, run, run.new_staging("eval"), "eval", "e" * 64)
    track_eval(ctx, result)

    tb = tensorboard_scalars(tmp_path / "run" / "tracking" / "tensorboard" / f"train-{'f' * 12}")
    assert tb["train/loss"] == [(40, 1.0)]
    assert tb["eval/student/nDCG_10"] == [(40, pytest.approx(0.6))]
    assert tb["eval/bm25/nDCG_10"] == [(40, pytest.approx(0.4))]
    client, found = mlflow_run(tmp_path / "run" / "tracking", f"train-{'f' * 12}")
    assert mlflow_history(client, found.info.run_id, "eval/student/nDCG_10") == [(40, 0.6)]
    assert found.data.params == {"train.lr": "0.1"}


def test_wandb_offline_run_in_the_run_dir(tmp_path):
    run = RunDir.open(str(tmp_path / "run"))
    tracked = TrackedRun.open(
        TrackingSection(tensorboard=False, wandb={}), run, "train-abc", {"train.lr": 0.001}
    )
    with tracked.trackers(resumable=True) as trackers:
        for step in (1, 2, 3):
            trackers.log({"train/loss": 1.0 / step, "eval/student/nDCG@10": 0.5}, step)
    (path,) = (tmp_path / "run" / "tracking" / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item
            }
            history.append((rec.history.step.num, items["train/loss"]))
        elif kind == "run":
            config = {u.key: json.loads(u.value_json) for u in rec.run.config.update}
            assert rec.run.display_name == "train-abc"
    assert history == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert config["train.lr"] == 0.001


def test_remote_run_dir_publishes_the_event_files(s3, tmp_path):
    import pyarrow.fs as pafs

    run = RunDir.open(s3("raykd-tracking") + "/run")
    for launch in range(2):  # a relaunch adds its own event file beside the first
        tracked = TrackedRun.open(TrackingSection(), run, "train-abc")
        with tracked.trackers(resumable=True) as trackers:
            trackers.log({"train/loss": 1.0 + launch}, 1)
            trackers.log({"train/loss": 2.0 + launch}, 2)
        assert list(Path(tracked.root).rglob("events.out.tfevents.*"))  # written locally
        tracked.publish()
        assert not Path(tracked.root).exists()
    remote = run.path("tracking/tensorboard/train-abc")
    files = run.fs.get_file_info(pafs.FileSelector(remote))
    assert len(files) >= 2 and all(f.base_name.startswith("events.out.tfevents.") for f in files)
    local = tmp_path / "copy"
    local.mkdir()
    pafs.copy_files(remote, str(local), source_filesystem=run.fs)
    assert tensorboard_scalars(local)["train/loss"] == [(1, 2.0), (2, 3.0)]


# --- the sweep ----------------------------------------------------------------------------------


def test_tune_loggers_follow_the_config(tmp_path):
    from ray.tune.experiment import Trial
    from ray.tune.logger import TBXLoggerCallback

    from raykd.tuning.loggers import tune_loggers

    run = RunDir.open(str(tmp_path / "run"))
    assert [type(c) for c in tune_loggers(TrackingSection(), run)] == [TBXLoggerCallback]
    assert tune_loggers(TrackingSection(tensorboard=False), run) == []
    tb, mlflow, wandb = tune_loggers(TrackingSection(mlflow={}, wandb={}), run)
    assert isinstance(tb, TBXLoggerCallback)
    assert wandb.kwargs == {"mode": "offline"} and wandb.project == "raykd"
    wandb.setup()  # offline: no API key asked for

    # A trial's sampled values are its MLflow run's parameters; its results its metrics, named
    # as the stages name them (MLflow rejects nDCG@10).
    mlflow.setup()
    trial = Trial("raykd_trial", config={"train.lr": 0.01}, trial_id="t0001", stub=True)
    mlflow.log_trial_start(trial)
    mlflow.log_trial_result(1, trial, {"nDCG@10": 0.5, "training_iteration": 1})
    mlflow.log_trial_end(trial)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run/tracking/mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("raykd")
    assert experiment.artifact_location.endswith("run/tracking/mlflow/artifacts")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.data.params == {"train.lr": "0.01"}
    assert found.data.metrics["nDCG_10"] == 0.5
    assert found.data.tags["raykd.run_dir"] == run.uri


# --- config and extras --------------------------------------------------------------------------


def test_missing_extra_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        require_extras(TrackingSection(mlflow={}))
    assert str(err.value) == "tracking.mlflow: needs the mlflow extra (pip install 'raykd[mlflow]')"
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"^tracking\.wandb: needs the wandb extra"):
        require_extras(TrackingSection(wandb={"mode": "online"}))
    require_extras(TrackingSection())  # nothing extra asked for


def test_missing_extra_fails_the_command_before_any_stage(monkeypatch, tmp_path, capsys):
    from raykd.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    run_dir = tmp_path / "run"
    job = Path(__file__).resolve().parents[1] / "jobs" / "demo.yaml"
    argv = ["run", "--config", str(job), "--run-dir", str(run_dir)]
    assert main([*argv, "--set", "tracking.mlflow=true"]) == 2
    err = capsys.readouterr().err
    assert "raykd: error: tracking.mlflow: needs the mlflow extra" in err.splitlines()[0]
    assert not run_dir.exists()
