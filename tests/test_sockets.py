"""The two-worker ZeRO-2 train run of the suite: it learns (the loss falls), and every socket
that the processes of this local run open for listening is on loopback (README, "On a
cluster"), read from the OS with psutil while it runs."""

from __future__ import annotations

import ipaddress
import os
import threading
from pathlib import Path

import psutil
import pytest

from raykd.run_dir import RunDir
from raykd.stages.pipeline import run_stage, stage_by_name
from tests.test_train import train_config
from tests.train_helpers import write_train_set

pytestmark = pytest.mark.slow


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


def _listening(pids: set[int]) -> set[tuple[int, str, int, str]]:
    out = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = "?"
            out.add((conn.pid, conn.laddr.ip, conn.laddr.port, name))
    return out


def test_two_workers_zero2_learn_and_listen_on_loopback_only(
    ray_session, demo_config, prepared_run, tmp_path
):
    cfg = train_config(
        demo_config, tmp_path / "run", num_workers=2, zero_stage=2, epochs=3, batch_size=16
    )
    run = RunDir.open(cfg.run_dir)
    n = write_train_set(prepared_run, run, "topk")
    seen: set[tuple[int, str, int, str]] = set()
    done = threading.Event()

    def watch() -> None:
        me = psutil.Process(os.getpid())
        while not done.is_set():
            pids = {p.pid for p in me.children(recursive=True)} | {me.pid}
            seen.update(_listening(pids))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert run_stage(stage_by_name("train"), cfg, run)
    finally:
        done.set()
        watcher.join()
    info = run.read_json("manifests/train.json")["info"]
    # 80 queries over 2 workers, 8 per worker per step: 5 steps per epoch.
    assert info["steps_per_epoch"] == n // 16 and info["step"] == 3 * info["steps_per_epoch"]
    assert info["start_step"] == 0
    assert info["loss"] < 0.8 * info["first_loss"], info
    assert (Path(run.path("student")) / "modules.json").is_file()
    assert seen  # the watcher saw Ray's own listeners, so it was looking
    wide = sorted(s for s in seen if not _loopback(s[1]))
    assert not wide, f"listening beyond loopback: {wide}"
