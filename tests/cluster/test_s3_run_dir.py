"""Run dirs on object storage, over the S3 protocol (moto on loopback): stages commit, skip when
current and leave nothing staged; the run-dir lease holds there; a missing bucket is one line."""

from __future__ import annotations

import logging

import boto3
import pytest

from raykd.cli import main
from raykd.config import ConfigError
from raykd.run_dir import RunDir
from raykd.run_lock import LOCK_FILE, RunDirLocked, acquire


def _keys(bucket: str, prefix: str) -> list[str]:
    pages = (
        boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def job(tmp_path, demo_collection):
    path = tmp_path / "job.yaml"
    path.write_text(
        f"data:\n  format: beir\n  path: {demo_collection.root}\n"
        "mining:\n  sources: [bm25, random]\n  depth: 10\n  n_random: 5\n"
    )
    return str(path)


def test_stages_commit_skip_and_leave_nothing_staged_on_s3(
    s3, ray_session, job, tmp_path, capsys, caplog, monkeypatch
):
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    uri = f"{s3('raykd-runs')}/demo"
    argv = ["run", "--config", job, "--run-dir", uri, "--until", "mine"]
    assert main(argv) == 0, capsys.readouterr().err
    keys = _keys("raykd-runs", "demo/")
    assert "demo/job.yaml" in keys and "demo/manifests/mine.json" in keys
    assert any(k.startswith("demo/corpus/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith("demo/pool/") for k in keys)
    # Committed folders carry their _SUCCESS marker; nothing staged, partial or locked remains.
    assert "demo/corpus/_SUCCESS" in keys and "demo/pool/_SUCCESS" in keys
    assert not [k for k in keys if k.startswith(("demo/.staging", "demo/.partial"))]
    assert f"demo/{LOCK_FILE}" not in keys
    capsys.readouterr()
    # A re-run with the same config skips both stages, reading the manifests from S3.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raykd"):
        assert main(argv) == 0
    messages = {r.getMessage() for r in caplog.records}
    assert {"[1/2] prepare: up to date, skipped", "[2/2] mine: up to date, skipped"} <= messages
    assert _keys("raykd-runs", "demo/") == keys


def test_the_lease_holds_on_s3(s3):
    run = RunDir.open(f"{s3('raykd-lease')}/run")
    with acquire(run) as lease:
        assert run.read_json(LOCK_FILE)["token"] == lease.token
        with pytest.raises(RunDirLocked, match="in use by"):
            acquire(run)
    assert _keys("raykd-lease", "run/") == []


def test_a_missing_bucket_is_one_line(s3, tmp_path, job, capsys, monkeypatch):
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        RunDir.open("s3://no-such-bucket/run")
    assert main(["prepare", "--config", job, "--run-dir", "s3://no-such-bucket/run"]) == 2
    err = capsys.readouterr().err
    assert "raykd: error: run_dir s3://no-such-bucket/run: bucket 'no-such-bucket'" in err
    assert len(err.strip().splitlines()) <= 2


def test_a_subfolder_is_committed_with_its_stage_output(s3):
    # Stages mark their top-level outputs (queries/_SUCCESS); readers ask for queries/train.
    run = RunDir.open(f"{s3('raykd-commit')}/run")
    run.write_text("queries/train/part-0.parquet", "x")
    assert not run.exists("queries/train") and run.exists("queries/train", committed=False)
    run.write_text("queries/_SUCCESS", "")
    assert run.exists("queries/train") and run.exists("queries")


def test_a_model_folder_on_s3_is_fetched_once_per_version(s3, tmp_path, monkeypatch):
    from raykd.models import resolve_model

    monkeypatch.setenv("RAYKD_CACHE", str(tmp_path / "cache"))
    run = RunDir.open(f"{s3('raykd-model')}/run")
    run.write_text("student/config.json", '{"a": 1}')
    run.write_text("student/query_encoder/config.json", '{"q": 1}')
    uri = run.uri_of("student")
    local = resolve_model(uri)
    assert open(f"{local}/config.json").read() == '{"a": 1}'
    assert open(f"{local}/query_encoder/config.json").read() == '{"q": 1}'
    assert resolve_model(uri) == local
    # Retrained at the same URI: a new copy, not the stale one.
    run.write_text("student/config.json", '{"a": 22}')
    fresh = resolve_model(uri)
    assert fresh != local and open(f"{fresh}/config.json").read() == '{"a": 22}'


def test_a_staged_file_commits_as_one_object(s3):
    run = RunDir.open(f"{s3('raykd-file')}/run")
    run.write_text(".staging/eval-1/metrics.json", '{"m": 1}')
    run.commit(".staging/eval-1/metrics.json", "metrics.json")
    assert run.read_json("metrics.json") == {"m": 1} and run.exists("metrics.json")
    objects = [k for k in _keys("raykd-file", "run/") if not k.endswith("/")]  # not dir markers
    assert objects == ["run/metrics.json"]
