"""Nodes joining and leaving mid-score, on the multi-node Ray of ``tests/cluster/nodes.py``, with
the run dir on S3: the teacher's pool grows onto a node that joins while it scores and finishes
without the node it started on. Counts and placement come from the run dir and Ray's State API.
(A training node lost mid-epoch: tests/cluster/test_jobs.py.)
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_actors

from raykd.run_dir import RunDir

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _job(tmp_path, demo_collection, **sections) -> str:
    cfg = {
        "data": {"format": "beir", "path": str(demo_collection.root)},
        "mining": {"sources": ["bm25", "random"], "depth": 15, "n_random": 10},
        "augment": {"n_rein": 2, "mask_ratios": [0.3]},
        "student": {"model": str(demo_collection.student_dir)},
        "candidates": {"m": 4, "n_strata": 2, "n_masked": 1},
        **sections,
    }
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(cfg))
    return str(path)


def _submit(cluster, entrypoint: str) -> tuple[JobSubmissionClient, str]:
    client = JobSubmissionClient(cluster.dashboard)
    sid = client.submit_job(
        entrypoint=entrypoint, entrypoint_num_cpus=1, entrypoint_resources={"head": 1}
    )
    return client, sid


def _alive(cluster, client, sid, predicate) -> list:
    """The job's live actors that ``predicate`` picks; a finished job fails the wait."""
    if client.get_job_status(sid).is_terminal():
        raise AssertionError(client.get_job_logs(sid)[-3000:])
    job_id = client.get_job_info(sid).job_id
    return [
        a
        for a in list_actors(address=cluster.dashboard, detail=True, limit=10_000)
        if a.job_id == job_id and a.state == "ALIVE" and predicate(a)
    ]


def _finish(cluster, client, sid, timeout: float) -> str:
    cluster.wait_for(f"job {sid}", lambda: client.get_job_status(sid).is_terminal(), timeout)
    logs = client.get_job_logs(sid)
    assert client.get_job_status(sid) == JobStatus.SUCCEEDED, logs[-3000:]
    return logs


@pytest.fixture
def minilm_sized_teacher(demo_collection, tmp_path) -> str:
    """A cross-encoder of MiniLM's width and twelve layers (random weights, the demo's
    vocabulary). The job's 2,343 pairs kept the pool scoring for ~65 s after its first actor
    started here (~17 pairs/s per actor), and the node joined and the pool grew onto it 11.5 s
    after that start (2026-12-03; 3,916 pairs took 14 s to grow and 89 s more to finish). CI
    once ran a six-layer, 2k-pair version (about 0.4 of this work) before the pool grew."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(demo_collection.teacher_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=1536,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path / "teacher"
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def test_scoring_grows_onto_a_joining_node_and_survives_losing_its_first(
    ray_cluster, s3, demo_collection, minilm_sized_teacher, tmp_path
):
    uri = f"{s3('raykd-nodes')}/score"
    teacher = {
        "kind": "cross_encoder",
        "model": minilm_sized_teacher,
        "shard_rows": 1_000_000,  # one shard: one pool, which must grow and survive
        "actors": {
            "batch_size": 4,
            "torch_threads": 1,
            "min_actors": 1,
            "max_actors": 3,
            "resources": {"scorer": 1},
        },
    }
    job = _job(tmp_path, demo_collection, teacher=teacher)
    client, sid = _submit(ray_cluster, f"raykd run --config {job} --run-dir {uri} --until score")
    scorer = lambda a: "scorer" in (a.required_resources or {})  # noqa: E731
    nodes = ray_cluster.node_ids
    first = ray_cluster.wait_for(
        "the first scoring actor", lambda: _alive(ray_cluster, client, sid, scorer), 240
    )
    assert [a.node_id for a in first] == [nodes["scorer"]]
    # A node with room for two more actors joins while the stage runs: the pool grows onto it.
    ray_cluster.add("scorer2", 2, {"scorer": 2})

    def three() -> list | None:
        actors = _alive(ray_cluster, client, sid, scorer)
        return actors if len(actors) == 3 else None

    grown = ray_cluster.wait_for("the pool to grow to 3 actors", three, 120)
    placed = sorted(a.node_id for a in grown)
    assert placed == sorted([nodes["scorer"], nodes["scorer2"], nodes["scorer2"]])
    # The node the pool started on is lost mid-stage; the stage ends on scorer2 alone.
    ray_cluster.remove("scorer")
    logs = _finish(ray_cluster, client, sid, 300)
    assert "score: " in logs
    run = RunDir.open(uri)
    examples = pq.read_table(run.path("examples"), filesystem=run.fs)
    scores = pq.read_table(run.path("scores"), filesystem=run.fs)
    keys = list(zip(scores["qid"].to_pylist(), scores["eid"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)) == examples.num_rows
    assert set(keys) == set(
        zip(examples["qid"].to_pylist(), examples["eid"].to_pylist(), strict=True)
    )
    # Back to the fixture's shape for the other tests.
    ray_cluster.remove("scorer2")
    ray_cluster.add("scorer", 2, {"scorer": 1})
