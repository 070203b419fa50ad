"""The README's cluster command, run as written (but for the address and bucket) through the real
Jobs API against a head and three worker nodes, with the run dir on S3: a first submission is
stopped (SIGTERM) mid-training; the same command resumes it from its checkpoint, loses a training
node mid-epoch, resumes again on a replacement node and ends SUCCEEDED. Ray's own state shows
where each part ran: the drivers on the head, the teacher's actors on the scorer node, the two
train workers on two training nodes at a time."""

from __future__ import annotations

import re
import subprocess

import boto3
import pytest
import torch
from pyarrow.fs import LocalFileSystem, copy_files
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_actors

from raykd.run_dir import RunDir
from raykd.student.model import load_student
from tests.cluster.conftest import BIN, REPO, checkpointed_steps

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

STAGES = ("prepare", "mine", "augment", "score", "build", "train", "eval", "report")


def readme_command(config: str) -> str:
    """The README's ``ray job submit`` line for ``config``, its continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## On a cluster") :]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    (line,) = [ln for ln in lines if ln.startswith("ray job submit") and config in ln]
    return re.sub(r"\s+", " ", line).strip()


def _keys(bucket: str, prefix: str) -> list[str]:
    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _actors(cluster, job_id: str) -> list:
    """Every actor of a job, live or dead (Ray keeps the dead ones' records)."""
    return [
        a
        for a in list_actors(address=cluster.dashboard, detail=True, limit=10_000)
        if a.job_id == job_id
    ]


def test_the_readme_demo_job_stops_resumes_and_runs_where_it_should(ray_cluster, s3, tmp_path):
    bucket = s3("raykd-cluster").removeprefix("s3://")
    command = readme_command("jobs/demo.yaml").replace("s3://my-bucket", f"s3://{bucket}")
    assert f"--run-dir s3://{bucket}/demo" in command
    client = JobSubmissionClient(ray_cluster.dashboard)
    env = ray_cluster.env()

    def submit() -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def demo_jobs() -> list:
        return [j for j in client.list_jobs() if f"s3://{bucket}/demo" in j.entrypoint]

    # The first submission is stopped mid-training, once an epoch's checkpoint is on S3 (the
    # demo's BM25 teacher scores its 22,875 pairs in seconds: too short a window to stop in).
    first = submit()
    job = ray_cluster.wait_for(
        "the first job to start",
        lambda: [j for j in demo_jobs() if j.status == JobStatus.RUNNING],
        timeout=120,
    )[0]
    run = RunDir.open(f"s3://{bucket}/demo")

    def checkpointed() -> bool:
        if client.get_job_status(job.submission_id).is_terminal():
            raise AssertionError(client.get_job_logs(job.submission_id)[-3000:])
        return bool(checkpointed_steps(run))

    # Generous: on a slow day, 4 nodes on 2 cores reached it in 302 s (DeepSpeed's shm op built
    # inside that window). A job that ends instead fails at once, with its log.
    ray_cluster.wait_for("the first checkpoint", checkpointed, timeout=600, every=1)
    subprocess.run(
        [str(BIN / "ray"), "job", "stop", job.submission_id], env=env, check=True, timeout=60
    )
    ray_cluster.wait_for(
        "the stop",
        lambda: client.get_job_status(job.submission_id) == JobStatus.STOPPED,
        timeout=60,
    )
    first.communicate(timeout=60)
    stopped_logs = client.get_job_logs(job.submission_id)
    assert "raykd: error: stopped (SIGTERM) during train" in stopped_logs, stopped_logs[-3000:]
    keys = _keys(bucket, "demo/")
    # SIGTERM unwound the driver: the lease is released and nothing staged remains.
    assert "demo/.lock" not in keys
    assert not [k for k in keys if k.startswith(("demo/.staging", "demo/.partial"))]
    assert "demo/manifests/build.json" in keys and "demo/manifests/train.json" not in keys

    # The first job's teacher actors ran on the scorer node only, its driver on the head.
    nodes = dict(ray_cluster.node_ids)
    first_info = client.get_job_info(job.submission_id)
    assert first_info.driver_node_id == nodes["head"]
    scorers = [
        a
        for a in _actors(ray_cluster, first_info.job_id)
        if "scorer" in (a.required_resources or {})
    ]
    assert scorers and {a.node_id for a in scorers} == {nodes["scorer"]}
    stopped_at = max(checkpointed_steps(run))

    # The same command again resumes from that checkpoint; mid-epoch, after a checkpoint of its
    # own, it loses train2, and Ray Train resumes again on train3, as an autoscaler would add it.
    second = submit()
    resumed = ray_cluster.wait_for(
        "the second job to start",
        lambda: [j for j in demo_jobs() if j.submission_id != job.submission_id],
        timeout=60,
    )[0]

    def checkpointed_again() -> bool:
        if client.get_job_status(resumed.submission_id).is_terminal():
            raise AssertionError(client.get_job_logs(resumed.submission_id)[-3000:])
        return max(checkpointed_steps(run), default=0) > stopped_at

    ray_cluster.wait_for("a checkpoint of the resumed job", checkpointed_again, 600, every=1)
    lost_at = max(checkpointed_steps(run))
    ray_cluster.remove("train2")
    try:
        ray_cluster.add("train3", 2, {"on_demand": 1})
        out, _ = second.communicate(timeout=600)
    finally:
        ray_cluster.remove("train3")
        ray_cluster.add("train2", 2, {"on_demand": 1})
    assert client.get_job_status(resumed.submission_id) == JobStatus.SUCCEEDED, out[-3000:]
    logs = client.get_job_logs(resumed.submission_id)
    for k, stage in enumerate(("prepare", "mine", "augment", "score", "build"), 1):
        assert f"[{k}/8] {stage}: up to date, skipped" in logs
    # Training resumed from the stopped job's checkpoint (rank 0 says so, the driver shows it),
    # then, after the node loss, from a checkpoint taken after the resubmission.
    assert logs.count(f"\nresumed at step {stopped_at} (") == 1, logs
    # The job's log is the driver's console: the story, the table once, not Ray's output.
    assert len(logs.splitlines()) < 60 and logs.count("system           RR@10") == 1, logs
    info = run.read_json("manifests/train.json")["info"]
    assert stopped_at < info["start_step"] <= lost_at + info["steps_per_epoch"]
    epochs = int(re.search(r"train\.epochs=(\d+)", command).group(1))
    assert info["step"] == epochs * info["steps_per_epoch"]
    keys = _keys(bucket, "demo/")
    for stage in STAGES:
        assert f"demo/manifests/{stage}.json" in keys
    assert any(k.startswith("demo/report/") and k.endswith(".png") for k in keys)
    assert "demo/.lock" not in keys
    assert not [k for k in keys if k.startswith(("demo/.staging", "demo/.partial"))]

    # Where training ran: two workers on the two training nodes, then on train1 and train3.
    resumed_info = client.get_job_info(resumed.submission_id)
    assert resumed_info.driver_node_id == nodes["head"]
    workers = [
        a for a in _actors(ray_cluster, resumed_info.job_id) if a.class_name == "RayTrainWorker"
    ]
    by_node = {n: sum(a.node_id == n for a in workers) for n in {a.node_id for a in workers}}
    train3 = next(n for n in by_node if n not in (nodes["train1"], nodes["train2"]))
    assert by_node == {nodes["train1"]: 2, nodes["train2"]: 1, train3: 1}

    # The exported student, read back from S3, loads and encodes.
    local = tmp_path / "student"
    copy_files(
        run.path("student"),
        str(local),
        source_filesystem=run.fs,
        destination_filesystem=LocalFileSystem(),
    )
    vec = load_student(local).encode_query(torch.tensor([[1, 2, 3]]), torch.ones(1, 3).long())
    assert vec.shape[0] == 1 and torch.isfinite(vec).all()
