"""bench/gpu_check.py on this CPU machine: its arithmetic, its refusal without a GPU, and its
score, encode and FAISS checks run for real at small sizes on the CPU (``--cpu``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # this machine has none; stay sure of it
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_peak_table_and_recall():
    from raykd.planning.hardware import gpu_peak

    gc = _module()
    assert gpu_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_peak("NVIDIA H200") == 989e12
    assert gpu_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak("NVIDIA L4") == 121e12
    assert gpu_peak("Quadro RTX 4000") is None
    found = np.array([[1, 2, 3], [7, 8, 9]])
    exact = np.array([[3, 2, 5], [9, 4, 6]])
    # Query 1 holds 2 of its exact top 3, query 2 holds 1: (2 + 1) / (2 * 3).
    assert gc.recall_at(found, exact, k=3) == pytest.approx(0.5)
    # 1-recall@3: query 1's nearest (3) is found, query 2's (9) too; in the top 2, neither.
    assert gc.recall_at(found, exact, k=3, of=1) == 1.0
    assert gc.recall_at(found, exact, k=2, of=1) == 0.0
    # 2-recall@3: {3, 2} both found, {9, 4} one of two.
    assert gc.recall_at(found, exact, k=3, of=2) == pytest.approx(0.75)


def test_without_a_gpu_it_exits_at_once_saying_so():
    out = _run(timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no CUDA GPU" in out.stdout and "|" not in out.stdout


@pytest.mark.slow
def test_cpu_run_checks_scores_embeddings_and_search():
    out = _run("--cpu", "--only", "score", "encode", "faiss", "--pairs", "96", "--passages",
               "64", "--batch", "32", "--vectors", "60000", timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    cells = [line.split("|")[1:3] for line in out.stdout.splitlines() if line.startswith("|")]
    table = {k.strip(): v.strip() for k, v in cells}
    for row in ("score: raykd actor", "score: ratio raykd / CrossEncoder", "encode: raykd actor",
                "faiss flat cpu", "faiss ivf_pq cpu"):  # fmt: skip
        assert row in table, out.stdout
    assert table["score: fp32 vs fp32"].startswith("Pearson 1.0")  # fp32 both sides on CPU
    assert "FAILED" not in out.stdout
