"""One command per run dir: a second command fails at once naming the holder; a dead holder's
lease is taken over; --force-unlock breaks a live one. Two real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from raykd.cli import main
from raykd.run_dir import RunDir
from raykd.run_lock import LOCK_FILE, RunDirLocked, acquire

HOLDER = """
import sys, time
from raykd.run_dir import RunDir
from raykd.run_lock import acquire
lease = acquire(RunDir.open(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'run'``'s lease."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    proc.kill()
    proc.wait()


def _job(tmp_path, demo_collection):
    job = tmp_path / "job.yaml"
    job.write_text(f"data:\n  format: beir\n  path: {demo_collection.root}\n")
    return str(job)


def test_a_second_command_fails_at_once_then_takes_over_a_dead_holder(
    holder, demo_collection, ray_session, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    run, proc = holder
    argv = ["prepare", "--config", _job(tmp_path, demo_collection), "--run-dir", str(run)]
    start = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - start < 10
    assert f"in use by {socket.gethostname()} pid {proc.pid} since " in err, err
    assert "--force-unlock" in err and not (run / "corpus").exists()
    # The holder dies without releasing: its lease is stale at once on this host.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(argv) == 0
    assert (run / "corpus").is_dir() and not (run / LOCK_FILE).exists()


def test_force_unlock_breaks_a_live_lease(
    holder, demo_collection, ray_session, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("RAYKD_LOG_DIR", str(tmp_path / "logs"))
    run, proc = holder
    argv = ["prepare", "--config", _job(tmp_path, demo_collection), "--run-dir", str(run)]
    assert main([*argv, "--force-unlock"]) == 0
    assert (run / "corpus").is_dir()
    assert proc.poll() is None  # the other command runs on; the user chose to break its lease


def test_a_lease_without_heartbeat_expires(tmp_path):
    run = RunDir.open(str(tmp_path / "run"))
    alive = {"host": "elsewhere", "pid": 1, "started": time.time(), "heartbeat": time.time()}
    run.write_json(LOCK_FILE, {**alive, "token": "x"})
    with pytest.raises(RunDirLocked, match="in use by elsewhere pid 1 since"):
        acquire(run)
    run.write_json(LOCK_FILE, {**alive, "heartbeat": time.time() - 600, "token": "x"})
    with acquire(run, ttl_s=120) as lease:
        assert run.read_json(LOCK_FILE)["token"] == lease.token
        assert run.read_json(LOCK_FILE)["pid"] == os.getpid()
    assert not (tmp_path / "run").exists()


def test_the_heartbeat_keeps_a_lease_alive(tmp_path):
    run = RunDir.open(str(tmp_path / "run"))
    with acquire(run, ttl_s=0.6, heartbeat_s=0.1):
        first = run.read_json(LOCK_FILE)["heartbeat"]
        time.sleep(1.0)
        assert run.read_json(LOCK_FILE)["heartbeat"] > first
        # Renewed within the TTL, so another command (another pid) still sees it held.
        owner = run.read_json(LOCK_FILE)
        run.write_json(LOCK_FILE, {**owner, "host": "elsewhere"})
        with pytest.raises(RunDirLocked):
            acquire(run, ttl_s=0.6)
