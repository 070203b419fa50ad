"""A head and worker nodes shaped like ``cluster.yaml`` (``tests/cluster/nodes.py``), queried
through Ray's own State and Jobs APIs over the dashboard's HTTP address."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpointed_steps(run) -> list[int]:
    """Steps of the checkpoints Ray Train has registered in the run dir (on S3)."""
    from pyarrow.fs import FileSelector

    infos = run.fs.get_file_info(
        FileSelector(run.path("checkpoints"), recursive=True, allow_not_found=True)
    )
    steps = []
    for info in infos:
        if info.base_name == "checkpoint_manager_snapshot.json":
            with run.fs.open_input_stream(info.path) as f:
                snapshot = json.loads(f.read())
            steps += [int(r["metrics"]["step"]) for r in snapshot["checkpoint_results"]]
    return sorted(steps)


class RayCluster:
    """The running cluster: add and remove nodes, wait on Ray's state, with hang-proof waits."""

    def __init__(self, proc: subprocess.Popen, head: dict, tmp: str) -> None:
        self.proc, self.tmp = proc, tmp
        self.gcs, self.dashboard = head["gcs"], head["dashboard"]
        self.logs = os.path.join(head["session_dir"], "logs")
        self.node_ids = {"head": head["node_id"]}

    def _call(self, cmd: dict) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the cluster process died; Ray logs: {self.logs}")
        return json.loads(line)

    def add(self, name: str, num_cpus: int, resources: dict) -> str:
        out = self._call({"op": "add", "name": name, "num_cpus": num_cpus, "resources": resources})
        self.node_ids[name] = out["node_id"]
        return out["node_id"]

    def remove(self, name: str) -> None:
        self._call({"op": "remove", "name": name})
        self.node_ids.pop(name)

    def wait_for(self, what: str, check: Callable[[], object], timeout: float, every=0.5):
        """``check()``'s first truthy value; a timeout fails the test naming the Ray logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"{what}: not within {timeout:.0f} s; Ray logs: {self.logs}")

    def env(self) -> dict[str, str]:
        """The environment of a shell that talks to this cluster (README: ``RAY_ADDRESS``)."""
        return {**os.environ, "RAY_ADDRESS": self.dashboard, "PATH": _path()}


def _path() -> str:
    return f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def _wait_for_the_jobs_api(cluster: RayCluster) -> None:
    """The head's job agent registers seconds after the dashboard answers (until then a
    submission gets "No available agent"): a first, empty job runs once it has."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard)

    def submitted() -> str | None:
        try:
            return client.submit_job(entrypoint="true", entrypoint_resources={"head": 1})
        except RuntimeError as err:
            if "No available agent" in str(err):
                return None
            raise

    sid = cluster.wait_for("the Jobs API", submitted, timeout=60)
    cluster.wait_for(
        "the first job", lambda: client.get_job_status(sid) == JobStatus.SUCCEEDED, timeout=60
    )


@pytest.fixture(scope="package")
def ray_cluster(s3, request):
    """Head (1 CPU, ``head``), ``scorer`` (2 CPUs, ``scorer: 1``) and two training nodes
    (2 CPUs, ``on_demand: 1`` each), all on this machine, shared by the tests of tests/cluster
    (a test that adds or removes nodes puts this shape back) and stopped after them, so that its
    idle processes do not slow the rest of the suite.

    Ray's session folder lives under a short private temp dir (socket paths are limited to 108
    bytes); the nodes inherit the S3 endpoint and credentials that ``s3`` put in the environment.
    """
    tmp = tempfile.mkdtemp(prefix="rkc-", dir="/tmp")
    env = {
        **os.environ,
        "RAY_TMPDIR": tmp,
        "TMPDIR": tmp,  # the nodes' temp files (process-group stores) go with the cluster
        "PATH": _path(),
        "PYTHONFAULTHANDLER": "1",
        # As cluster.yaml's head: `ray job stop` gives the driver time to unwind before SIGKILL
        # (Ray's 3 s ran out on a slow day, and the stopped job never said so).
        "RAY_JOB_STOP_WAIT_TIME_S": "60",
    }
    env.pop("RAY_ADDRESS", None)
    head = {
        "num_cpus": 1,
        "resources": {"head": 1},
        "dashboard_port": free_port(),
        "agent_port": free_port(),
    }
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("nodes.py")), json.dumps(head)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
    )
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        pytest.fail(f"the Ray head did not start; Ray logs under {tmp}")
    cluster = RayCluster(proc, json.loads(line), tmp)
    cluster.add("scorer", 2, {"scorer": 1})
    cluster.add("train1", 2, {"on_demand": 1})
    cluster.add("train2", 2, {"on_demand": 1})
    _wait_for_the_jobs_api(cluster)
    yield cluster
    proc.stdin.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not request.session.testsfailed:  # a failure's message names the logs: keep them
        shutil.rmtree(tmp, ignore_errors=True)
