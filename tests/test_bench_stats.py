"""bench/scifact_kd.py's paired significance test on hand-checkable differences (no Ray)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "scifact_kd.py"
_spec = importlib.util.spec_from_file_location("scifact_kd", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_differences_1_2_3():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3 on 2 df, where the t CDF is
    # closed-form: p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12 / 14).
    # Sign flips: of the 8 patterns only +++ and --- reach |sum| 6 (the others give 4, 2, 0),
    # so the exact randomisation p is 2 / 8; 10,000 draws land near it.
    a, b = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    out = bench.paired_test(a, b, seed=0)
    assert out["n"] == 3
    assert out["mean_diff"] == pytest.approx(2.0)
    assert out["p_t"] == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert out["p_rand"] == pytest.approx(0.25, abs=0.02)
    # The sign of the difference changes neither p; the same seed repeats exactly.
    swapped = bench.paired_test(b, a, seed=0)
    assert swapped["mean_diff"] == pytest.approx(-2.0)
    assert swapped["p_t"] == pytest.approx(out["p_t"])
    assert bench.paired_test(a, b, seed=0) == out


def test_no_difference_and_a_large_one():
    x = np.linspace(0.1, 0.9, 50)
    same = bench.paired_test(x, x)
    assert same["mean_diff"] == 0.0 and same["p_t"] == 1.0 and same["p_rand"] == 1.0
    # Every one of 50 queries gains: only all-plus or all-minus flips reach the observed mean,
    # so the randomisation p is its floor 1 / 10,001.
    rng = np.random.default_rng(1)
    gain = bench.paired_test(x + rng.uniform(0.05, 0.1, 50), x)
    assert gain["p_t"] < 1e-10
    assert gain["p_rand"] == pytest.approx(1 / 10_001)


def test_rejects_unpaired_input():
    with pytest.raises(ValueError):
        bench.paired_test(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        bench.paired_test(np.zeros(1), np.zeros(1))
