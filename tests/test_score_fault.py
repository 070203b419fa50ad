"""The score stage under real failures: a SIGKILLed stage process, and a SIGKILLed scoring actor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.score_helpers import make_examples, score_run, with_teacher

pytestmark = pytest.mark.slow

ACTOR_TITLE = "ray::MapWorker(MapBatches(CrossEncoderScorer))"

DRIVER = """
import json, sys
import ray
from raykd.config import validate
from raykd.stages.pipeline import run_stage, stage_by_name
from raykd.run_dir import RunDir

cfg = validate(json.loads(sys.argv[1]))
ray.init(address=sys.argv[2], logging_level="ERROR")
ray.data.DataContext.get_current().enable_progress_bars = False
run_stage(stage_by_name("score"), cfg, RunDir.open(cfg.run_dir))
"""


@pytest.fixture
def scoring_run(ray_session, demo_config, tmp_path):
    """A run dir ready for ``score``, built from the demo collection."""
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name

    def make(n_queries: int, n_neg: int, **teacher):
        base = tmp_path / "base"
        cfg = with_teacher(demo_config.model_copy(update={"run_dir": str(base)}), **teacher)
        prepared = RunDir.open(str(base))
        run_stage(stage_by_name("prepare"), cfg, prepared)
        examples = make_examples(prepared, cfg.data.splits.train, n_queries, n_neg)
        cfg, run = score_run(base, tmp_path / "run", cfg, examples)
        return cfg, run, examples

    return make


def _shard_files(run_root: Path) -> dict[str, int]:
    return {
        p.name: pq.read_metadata(p).num_rows
        for p in (run_root / ".partial" / "score").glob("*/out/shard-*.parquet")
    }


def _assert_exactly_once(scores, examples) -> None:
    eids = scores["eid"].to_pylist()
    assert len(eids) == len(set(eids)) == examples.num_rows
    assert set(eids) == set(examples["eid"].to_pylist())


def test_rerun_after_sigkill_scores_only_missing_shards(scoring_run, ray_session):
    from raykd.stages.pipeline import run_stage, stage_by_name

    # One pipeline scores every shard and writes each as it completes: enough shards and rows
    # (60 queries x 22 examples in ~14 shards, batches of 4) that the kill, as soon as the
    # first shard file appears, lands while later shards are still being scored.
    cfg, run, examples = scoring_run(
        60, 10, shard_rows=100, actors={"torch_threads": 1, "batch_size": 4}
    )
    root = Path(run.root)
    gcs = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(cfg.model_dump(mode="json")), gcs],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        while not _shard_files(root):
            assert proc.poll() is None, "the stage process ended before writing a shard"
            assert time.monotonic() < deadline, "no shard written in time"
            time.sleep(0.01)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = _shard_files(root)
    n_shards = len(list(root.glob(".partial/score/*/input/shard=*")))
    assert 1 <= len(done) < n_shards, "the kill must land between shards"
    assert not run.exists("scores") and not run.exists("manifests/score.json")

    assert run_stage(stage_by_name("score"), cfg, run)
    _assert_exactly_once(pq.read_table(run.path("scores")), examples)
    info = run.read_json("manifests/score.json")["info"]
    assert info["shards"] == n_shards
    assert info["shards_resumed"] == len(done)
    assert info["pairs_scored"] == examples.num_rows - sum(done.values())


def _actor_pids(title: str) -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd.startswith(title):
            out[int(entry)] = cmd
    return out


def test_killed_scoring_actor_is_replaced_and_no_row_is_lost(scoring_run):
    from raykd.stages.pipeline import run_stage, stage_by_name

    cfg, run, examples = scoring_run(
        30, 4, shard_rows=10_000, actors={"torch_threads": 1, "batch_size": 4}
    )
    killed: list[int] = []
    seen: set[int] = set()
    stop = threading.Event()

    def killer() -> None:
        # Kill the first actor caught inside a batch (".submit"): a mid-run failure by construction.
        while not stop.is_set():
            pids = _actor_pids(ACTOR_TITLE)
            seen.update(pids)
            busy = [pid for pid, cmd in pids.items() if cmd.endswith(".submit")]
            if busy and not killed:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        assert run_stage(stage_by_name("score"), cfg, run)
    finally:
        stop.set()
        thread.join()
    assert killed, "no scoring actor was caught mid-batch"
    assert seen - set(killed), "the killed actor was not replaced by a new one"
    _assert_exactly_once(pq.read_table(run.path("scores")), examples)


GPU_DRIVER = """
import json, sys
import ray
from raykd.config import validate
from raykd.stages.pipeline import run_stage, stage_by_name
from raykd.run_dir import RunDir

cfg = validate(json.loads(sys.argv[1]))
# A Ray of its own that declares a GPU this machine lacks: a GPU pool's actors get scheduled on
# it and the scorer, finding no CUDA, runs on the CPU.
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR")
ray.data.DataContext.get_current().enable_progress_bars = False
run_stage(stage_by_name("score"), cfg, RunDir.open(cfg.run_dir))
"""


def test_a_gpu_pool_streams_from_the_tokeniser(scoring_run):
    """A GPU pool is fed by the tokeniser as it goes (no materialised pre-stage): on a Ray with a
    declared GPU, every shard is scored exactly once and matches a CPU pool's scores."""
    from raykd.stages.pipeline import run_stage, stage_by_name

    actors = {"torch_threads": 1, "batch_size": 8, "num_gpus": 1}
    cfg, run, examples = scoring_run(20, 4, shard_rows=40, actors=actors)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", GPU_DRIVER, json.dumps(cfg.model_dump(mode="json"))],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    gpu = pq.read_table(run.path("scores"))
    _assert_exactly_once(gpu, examples)
    assert run.read_json("manifests/score.json")["info"]["shards"] >= 3

    cpu_cfg = cfg.model_copy(deep=True)
    cpu_cfg.teacher.actors.num_gpus = 0.0
    assert run_stage(stage_by_name("score"), cpu_cfg, run, force=True)
    cpu = pq.read_table(run.path("scores"))
    by_eid = dict(zip(cpu["eid"].to_pylist(), cpu["score"].to_pylist(), strict=True))
    for eid, score in zip(gpu["eid"].to_pylist(), gpu["score"].to_pylist(), strict=True):
        assert abs(by_eid[eid] - score) < 1e-5, eid
