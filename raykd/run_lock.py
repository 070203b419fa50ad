"""One command at a time per run dir: an exclusive lease in ``<run>/.lock``.

The lease names its owner (host, pid, start) and carries a heartbeat that a background thread
renews every ``HEARTBEAT_S`` seconds. Another command fails at once with "run dir in use by <host>
pid N since T". A lease is stale, and taken over, when its heartbeat is older than ``TTL_S`` (the
owner died without releasing it, on any machine), or at once when its owner is a dead process on
this host. ``--force-unlock`` breaks a live one.

Local run dirs create the lease atomically (``O_EXCL``). An object store has no create-if-absent
in pyarrow's filesystems, so there the lease is written, then read back after a short settle: of
two commands racing within that window the later writer wins and the other fails. That is a
narrower guarantee than the local one, and it is the one stated here.

Tune trials' run dirs live inside the sweep's and are written by the sweep's command, which
holds the lease; they take none of their own.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from raykd.errors import StageError
from raykd.run_dir import RunDir

LOCK_FILE = ".lock"
HEARTBEAT_S = 30.0
TTL_S = 120.0
SETTLE_S = 1.0  # object stores: how long a writer waits before reading its lease back


class RunDirLocked(StageError):
    """The run dir is held by another live command."""


@dataclass
class Lease:
    """The lease a command holds; ``release`` (or leaving the ``with``) gives it back."""

    run: RunDir
    token: str
    ttl_s: float = TTL_S
    heartbeat_s: float = HEARTBEAT_S

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="raykd-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            owner = _read(self.run)
            if owner is None or owner.get("token") != self.token:
                return  # broken by --force-unlock: stop renewing what is no longer ours
            owner["heartbeat"] = time.time()
            self.run.write_text(LOCK_FILE, json.dumps(owner))

    def release(self) -> None:
        self._stop.set()
        owner = _read(self.run)
        if owner is not None and owner.get("token") == self.token:
            self.run.delete(LOCK_FILE)
            self.run.prune("")

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(run: RunDir) -> dict | None:
    try:
        return run.read_json(LOCK_FILE)
    except (FileNotFoundError, OSError, ValueError):
        return None


def _stale(owner: dict, ttl_s: float) -> bool:
    if time.time() - float(owner.get("heartbeat", 0)) > ttl_s:
        return True
    if owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, KeyError):
            return False
    return False


def describe(owner: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("started", 0))))
    return f"{owner.get('host', '?')} pid {owner.get('pid', '?')} since {since}"


def acquire(
    run: RunDir, *, force: bool = False, ttl_s: float = TTL_S, heartbeat_s: float = HEARTBEAT_S
) -> Lease:
    """Take ``run``'s lease or raise RunDirLocked naming its holder; ``force`` breaks it."""
    now = time.time()
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": now,
        "heartbeat": now,
        "token": uuid.uuid4().hex,
    }
    owner = _read(run)
    if owner is not None and not force and not _stale(owner, ttl_s):
        raise _locked(run, owner)
    if owner is not None:
        run.delete(LOCK_FILE)
    if run.is_local:
        path = run.path(LOCK_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise _locked(run, _read(run) or {}) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
    else:
        run.write_text(LOCK_FILE, json.dumps(me))
        time.sleep(SETTLE_S)
        owner = _read(run)
        if owner is None or owner.get("token") != me["token"]:
            raise _locked(run, owner or {})
    return Lease(run, me["token"], ttl_s, heartbeat_s)


def _locked(run: RunDir, owner: dict) -> RunDirLocked:
    return RunDirLocked(
        f"run dir {run.uri} in use by {describe(owner)}; if that command is gone, run again "
        "with --force-unlock"
    )
