"""raykd's Acero plans survive Arrow's thread pools growing after the process's first plan, as
Ray Data's Parquet reader makes them grow (raykd.data.acero). Each scenario runs in a fresh
interpreter: the capacity Acero caches is per process, and this one's may be fixed already."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import pyarrow as pa, pyarrow.dataset as pads, pyarrow.parquet as pq
from raykd.data import acero

# 2000 one-batch chunks: a threaded plan spreads them over every CPU-pool thread.
t = pa.Table.from_batches(
    [pa.record_batch({"k": pa.array([i % 7] * 50), "v": pa.array(range(50))}) for i in range(2000)]
)
t.group_by("k").aggregate([("v", "count")])  # the first plan fixes Acero's thread capacity
capacity = pa.cpu_count() + pa.io_thread_count() + 1
pa.set_cpu_count(2 * capacity)  # as Ray Data's reader does (32 CPU threads), past the capacity
"""


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    code = SETUP + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_threaded_group_by_fails_after_the_pools_grow(tmp_path):
    """The hazard itself, in this pyarrow: if this stops failing, raykd.data.acero's
    single-threaded plans may no longer be needed."""
    proc = _run(
        """
        for _ in range(5):
            t.group_by("k").aggregate([("v", "count")])
        """,
        tmp_path,
    )
    assert proc.returncode != 0
    assert "ArrowIndexError: thread index" in proc.stderr and "is out of range" in proc.stderr


def test_raykd_plans_run_after_the_pools_grow(tmp_path):
    proc = _run(
        """
        for i in range(200):
            pq.write_table(pa.table({"x": list(range(10))}), f"p{i}.parquet")
        other = pa.table({"k": list(range(7)), "w": [10 * k for k in range(7)]})
        for _ in range(5):
            counts = acero.group_by(t, "k").aggregate([("v", "count")])
            assert sorted(counts["v_count"].to_pylist()) == [14250] * 2 + [14300] * 5, counts
            total = acero.group_by(t, []).aggregate([("v", "sum")])["v_sum"][0].as_py()
            assert total == 2000 * sum(range(50)), total
            joined = acero.join(t, other, "k")
            assert joined.num_rows == t.num_rows and joined["w"].null_count == 0
            assert acero.count_rows(pads.dataset(".")) == 2000
        print("ok")
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"
