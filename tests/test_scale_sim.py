"""bench/scale_sim.py at its smallest size: the synthetic artifacts have MS MARCO's per-query
shape, and every stage's measurements come back with the row counts that shape implies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale_sim.py"
FRACTION = 0.0002
QUERIES = round(502_939 * FRACTION)


@pytest.mark.slow
def test_smallest_size(tmp_path):
    results = tmp_path / "results.json"
    cmd = [sys.executable, str(BENCH), "--fractions", str(FRACTION), "--strategies", "dark"]
    cmd += ["--workdir", str(tmp_path / "work"), "--results", str(results)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    generated = json.loads(
        (tmp_path / "work" / f"f{FRACTION}" / "synthetic" / "generated.json").read_text()
    )
    # One positive, 200 pool negatives, 10 reinforced, 5 masked per query; one score each.
    assert generated["queries/train"] == QUERIES
    assert generated["pool"] == 200 * QUERIES
    assert generated["examples"] == generated["scores"] == 216 * QUERIES

    r = json.loads(results.read_text())[str(FRACTION)]
    assert set(r) == {"build dark", "report", "mine", "augment"}
    assert r["build dark"]["rows"] == {"train/dark": QUERIES}
    assert r["build dark"]["main_rows"] == 216 * QUERIES
    assert r["report"]["rows"]["report"] >= 1
    # Mine draws 200 random passages per query and drops a drawn positive; augment then adds
    # the positive, 10 reinforced and 5 masked examples per query.
    pool = r["mine"]["rows"]["pool"]
    assert 199 * QUERIES <= pool <= 200 * QUERIES
    assert r["augment"]["rows"]["examples"] == pool + 16 * QUERIES
    for m in r.values():
        assert m["wall_s"] > 0 and m["driver_peak_mib"] > 0 and m["spilled_mib"] >= 0
    assert "| build dark | 0.0002 |" in proc.stdout
