"""What listens during training: every socket that the processes of a local run open for
listening is on loopback (README, "Security"), read from the OS with psutil while a two-worker
Ray Train job runs."""

from __future__ import annotations

import ipaddress
import os
import threading

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


def test_a_local_training_run_listens_on_loopback_only(
    ray_session, demo_config, prepared_run, tmp_path
):
    cfg = train_config(demo_config, tmp_path / "run", num_workers=2, epochs=1, batch_size=16)
    run = RunDir.open(cfg.run_dir)
    write_train_set(prepared_run, run, "topk")
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
    assert seen  # the watcher saw Ray's own listeners, so it was looking
    wide = sorted(s for s in seen if not _loopback(s[1]))
    assert not wide, f"listening beyond loopback: {wide}"
