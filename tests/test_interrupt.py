"""Ctrl-C and what a run leaves behind, through a real ``raykd`` process and its own local Ray:
SIGINT exits 130 naming the stage that resumes, ``raykd run`` then resumes there, and neither
run leaves scratch folders in the run dir or the temp dir."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _as_from_a_shell() -> None:
    """SIGINT as a terminal's shell hands it to a command: deliverable, default action. The
    pytest process (a Ray driver after many Ray tests) need not hand it on that way."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _raykd(args, env, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "raykd.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_shell,
        **kw,
    )


def test_ctrl_c_exits_130_and_run_resumes(demo_collection, tmp_path, request):
    # A short temp dir: Ray's dashboard puts AF_UNIX sockets (107 bytes at most) under it.
    tmp = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        # Ray's session folder (its sockets' paths must stay short) is not what is checked here.
        "RAY_TMPDIR": "/tmp",
        "RAYKD_LOG_DIR": str(tmp_path / "logs"),
        "RAY_ADDRESS": "",
    }
    job = tmp_path / "job.yaml"
    job.write_text(
        f"data:\n  format: beir\n  path: {demo_collection.root}\n"
        "ray:\n  num_cpus: 2\nmining:\n  sources: [bm25, random]\n  depth: 20\n  n_random: 10\n"
    )
    run = tmp_path / "run"
    args = ["run", "--config", str(job), "--run-dir", str(run), "--until", "mine"]
    # What this process passes on to its children (a shell passes neither a blocked nor an
    # ignored SIGINT): named when the interrupt does not land.
    parent = f"parent SIGINT mask {signal.pthread_sigmask(signal.SIG_BLOCK, [])}, " + str(
        signal.getsignal(signal.SIGINT)
    )
    proc = _raykd(args, env)
    # Interrupt the corpus ingest on Ray Data.
    for line in proc.stderr:
        if "prepare: running" in line:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, f"{parent}\n{err}"
    assert "raykd: error: interrupted during prepare; `raykd run` resumes from prepare" in err, err
    assert not run.exists()  # nothing committed, no staging, no lock, no empty run dir

    again = _raykd(args, env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert re.search(r"^\[1/2\] prepare: [\d,]+ passages, ", err, re.M), err
    assert re.search(r"^\[2/2\] mine: 80 queries, ", err, re.M), err
    assert (run / "pool").is_dir()
    assert sorted(p.name for p in run.iterdir()) == [
        "corpus",
        "job.yaml",
        "manifests",
        "pool",
        "qrels",
        "queries",
    ]
    # The local Ray's processes got a private temp dir, removed at exit: no pymp-* litter.
    assert [p.name for p in tmp.iterdir()] == [], list(tmp.iterdir())


def test_a_bad_line_found_inside_ray_is_one_line_on_the_console(tmp_path, request):
    """The error a Ray task raises reaches the console as the one ``raykd: error:`` line (file,
    line, what) and the log's path; Ray's copy of the task traceback goes to the log only."""
    tmp = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    logs = tmp_path / "logs"
    env = {**os.environ, "TMPDIR": str(tmp), "RAY_TMPDIR": "/tmp", "RAYKD_LOG_DIR": str(logs)}
    env.pop("RAY_ADDRESS", None)
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b\n')
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "a?"}\n')
    for split in ("train", "dev"):
        (data / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"data:\n  format: beir\n  path: {data}\nray:\n  num_cpus: 2\n")
    proc = _raykd(["prepare", "--config", str(job), "--run-dir", str(tmp_path / "run")], env)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert f"raykd: error: {data}/corpus.jsonl:2: bad JSON" in err, err
    assert len(lines) < 5, err
    (log,) = logs.iterdir()
    assert "Traceback" in log.read_text() and f"raykd: full log: {log}" in err
    assert not (tmp_path / "run").exists()
