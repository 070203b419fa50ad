"""The cluster path's bad inputs, each through the ``raykd`` command: an address where no Ray
cluster answers, credentials the object store rejects, and workers or actors that no node of the
cluster can hold. Each fails at once with one line naming what to fix, and leaves the run dir as
it was (a missing bucket: tests/cluster/test_s3_run_dir.py).

The address and credential cases run ``raykd`` in a subprocess of its own: this process already
holds the session's Ray and the S3 filesystem's credentials."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from raykd.cli import main
from tests.test_bad_inputs import write_collection

REPO = Path(__file__).resolve().parents[2]


def tree(root: Path) -> list[str] | None:
    """Every file and folder under ``root`` (None: no run dir)."""
    if not root.exists():
        return None
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_line(err: str) -> str:
    """The failure's ``raykd: error:`` line, which stderr ends with (and the log's path); a
    progress bar may come before it (BM25's corpus statistics), a traceback may not."""
    *_, error, log = err.strip().splitlines()
    assert error.startswith("raykd: error: ") and log.startswith("raykd: full log: "), err
    assert "Traceback" not in err, err
    return error.removeprefix("raykd: error: ")


@pytest.fixture(scope="module")
def job(tmp_path_factory, demo_collection) -> Path:
    """A job over a small collection whose pipeline reaches train cheaply: BM25 mining and
    teacher, no dark examples, random candidates; the demo's tiny student."""
    root = tmp_path_factory.mktemp("bad-cluster")
    collection = write_collection(root / "collection")
    path = root / "job.yaml"
    path.write_text(
        f"data:\n  format: beir\n  path: {collection}\n"
        "mining:\n  depth: 5\n  n_random: 5\n"
        "teacher:\n  kind: bm25\n"
        "augment:\n  n_rein: 0\n  mask_ratios: []\n"
        f"student:\n  model: {demo_collection.student_dir}\n"
        "candidates:\n  strategy: random\n  m: 2\n"
        "train:\n  batch_size: 2\n"
    )
    return path


@pytest.fixture(scope="module")
def built(job, ray_session, tmp_path_factory) -> Path:
    """A run dir where every stage up to build has committed (on the session's Ray)."""
    run = tmp_path_factory.mktemp("bad-cluster-run") / "run"
    assert main(["run", "--config", str(job), "--run-dir", str(run), "--until", "build"]) == 0
    return run


POOL_CASES = {
    "trainer workers": (
        "train",
        ["train.worker_resources={no_such: 1}"],
        "train.worker_resources {'no_such': 1.0}: no node of this Ray cluster offers no_such, "
        "and no autoscaler node type adds it (nodes offer: CPU, memory, object_store_memory)",
    ),
    "teacher actors": (
        "score",
        ["teacher.actors.num_gpus=1"],
        "teacher.actors.num_gpus 1: this Ray cluster has no GPUs, and no autoscaler node type "
        "adds one",
    ),
    "eval encoders": (
        "eval",
        ["eval.systems=[init]", "eval.actors.num_gpus=0.5"],
        "eval.actors.num_gpus 0.5: this Ray cluster has no GPUs, and no autoscaler node type "
        "adds one",
    ),
    "mining encoders": (
        "mine",
        [
            "mining.sources=[dense]",
            "mining.dense.model=<student>",
            "mining.actors.resources={scorer: 1}",
        ],
        "mining.actors.resources {'scorer': 1.0}: no node of this Ray cluster offers scorer, and "
        "no autoscaler node type adds it (nodes offer: CPU, memory, object_store_memory)",
    ),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_workers_or_actors_no_node_can_hold(
    case, built, demo_collection, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    stage, overrides, reason = POOL_CASES[case]
    overrides = [o.replace("<student>", str(demo_collection.student_dir)) for o in overrides]
    before = tree(built)
    start = time.perf_counter()
    code = main([stage, "--run-dir", str(built), *(a for o in overrides for a in ("--set", o))])
    wall = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert one_line(err) == reason
    assert wall < 30
    # No staging, partial scores, checkpoints or new job.yaml: the run dir is as it was.
    assert tree(built) == before


def raykd(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """``raykd args`` in a fresh process (with ``env`` added); its result and wall time."""
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    pythonpath = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))
    full = {**base, "PYTHONPATH": pythonpath, "RAYKD_LOG_DIR": str(tmp_path / "logs"), **env}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "raykd.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=tmp_path,
        timeout=120,
    )
    return done, time.perf_counter() - start


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("source", ["--address", "ray.address", "RAY_ADDRESS"])
def test_an_address_where_no_ray_answers(source, job, tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    run = tmp_path / "run"
    args = ["prepare", "--config", str(job), "--run-dir", str(run)]
    env = {}
    if source == "--address":
        args += ["--address", address]
    elif source == "ray.address":
        args += ["--set", f"ray.address={address}"]
    else:
        env["RAY_ADDRESS"] = address
    done, wall = raykd(args, tmp_path, **env)
    assert done.returncode == 2, done.stderr
    unset = "leave out --address" if source == "--address" else f"unset {source}"
    assert len(done.stderr.strip().splitlines()) == 2, done.stderr
    assert one_line(done.stderr) == (
        f"{source} {address}: no Ray cluster answers there (Connection refused; start one with "
        f"`ray start --head`, or {unset} for a local Ray)"
    )
    assert wall < 20
    # Nothing written: no job.yaml, manifest, staging folder or lock, not even the folder.
    assert tree(run) is None


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    return s3("raykd-credentials")


def _user_without_policy() -> dict[str, str]:
    """The keys of a user the store knows, with no policy: it may not read any bucket."""
    iam = boto3.client("iam")
    iam.create_user(UserName="raykd-no-policy")
    key = iam.create_access_key(UserName="raykd-no-policy")["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


CREDENTIALS = {
    "unknown key": (
        lambda: {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"},
        "the store rejected these credentials (InvalidAccessKeyId; check AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)",
    ),
    "wrong secret": (
        lambda: {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        "the store rejected these credentials (SignatureDoesNotMatch; check AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)",
    ),
    "no permission": (
        _user_without_policy,
        "these credentials may not read bucket 'raykd-credentials' (AccessDenied; check the "
        "bucket's and the user's policies, or AWS_PROFILE)",
    ),
}


@pytest.mark.parametrize("case", list(CREDENTIALS))
def test_credentials_the_store_refuses(case, bucket, job, tmp_path):
    keys, reason = CREDENTIALS[case]
    uri = f"{bucket}/run"
    done, _ = raykd(["prepare", "--config", str(job), "--run-dir", uri], tmp_path, **keys())
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 2, done.stderr
    assert one_line(done.stderr) == f"run_dir {uri}: {reason}"
    listed = boto3.client("s3").list_objects_v2(Bucket="raykd-credentials")
    assert listed.get("KeyCount") == 0
