"""bench/scifact_kd.py: its paired significance test on hand-checkable differences, and its
settings on top of jobs/scifact.yaml (no Ray)."""

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


def _bench_config(argv: list[str]):
    from raykd.config import load_config, validate

    args = bench.parse_args(argv)
    raw = load_config(_PATH.parents[1] / "jobs" / "scifact.yaml").model_dump(mode="json")
    for key, value in bench.settings(args).items():
        bench._assign(raw, key, value)
    return validate(raw, "bench")


def test_cpu_default_is_the_shipped_recipe():
    from raykd.config import load_config

    job = load_config(_PATH.parents[1] / "jobs" / "scifact.yaml")
    cfg = _bench_config([])
    assert cfg.model_dump(exclude={"data"}) == job.model_dump(exclude={"data"})
    assert Path(cfg.data.path).is_absolute()


def test_flags_and_full_override_the_recipe():
    cfg = _bench_config(["--m", "6", "--epochs", "3", "--train-queries", "20"])
    assert (cfg.candidates.m, cfg.augment.n_rein, cfg.train.epochs) == (6, 6, 3)
    assert cfg.data.max_train_queries == 20
    full = _bench_config(["--full"])
    assert (full.candidates.m, full.augment.n_rein, full.train.epochs) == (10, 10, 3)
    assert full.train.use_gpu and full.eval.actors.num_gpus == full.teacher.actors.num_gpus == 1.0
    assert full.mining.actors.num_gpus == 1.0 and full.teacher.actors.torch_threads is None
    assert full.mining.sources == ["bm25", "dense", "random"] and full.train.torch_threads is None
