"""Repeats in a sweep, without Ray running: the trials Tune's variant generator makes of a space
(their seeds), the mean ± std per point against hand-computed values, and the results files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml

from raykd.config import JobConfig, load_config
from raykd.run_dir import RunDir
from raykd.stages.tune import TuneSummary, trial_config, write_results
from raykd.tuning.repeats import (
    REPEAT,
    mean_std,
    param_space,
    point_rows,
    repeat_seeds,
    repeats_per_point,
)
from raykd.tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def _space(tmp_path: Path, text: str, base: JobConfig):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return load_space(p, base)


def _trials(space, base: JobConfig, num_samples: int, random_state: int = 0) -> list[JobConfig]:
    """The configs of the trials a sweep of ``space`` runs, as Tune's variant generator (what
    the sweep's BasicVariantGenerator calls) resolves its param_space, ``num_samples`` times."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    ps, samples = param_space(space, num_samples)
    rng = np.random.RandomState(random_state)
    configs = []
    for _ in range(samples):
        for _, resolved in generate_variants(ps, random_state=rng):
            configs.append(trial_config(base, resolved, f"/tmp/t{len(configs)}", "/tmp/dev.json"))
    return configs


def _seeds(cfg: JobConfig) -> tuple[int, int]:
    return cfg.train.seed, cfg.candidates.seed


def test_pure_grid_repeats_each_point_with_distinct_seeds(tmp_path):
    base = JobConfig().model_copy(
        update={
            "train": JobConfig().train.model_copy(update={"seed": 7}),
            "candidates": JobConfig().candidates.model_copy(update={"seed": 3}),
        }
    )
    space = _space(tmp_path, "train.lr: {grid: [1.0e-4, 1.0e-3]}\n", base)
    assert space.is_grid and repeats_per_point(space, 3) == 3
    trials = _trials(space, base, 3)
    assert len(trials) == 6
    by_lr: dict[float, list[tuple[int, int]]] = {}
    for t in trials:
        by_lr.setdefault(t.train.lr, []).append(_seeds(t))
    # Repeat k: the job's seeds + k, for both seeds.
    assert by_lr == {1e-4: [(7, 3), (8, 4), (9, 5)], 1e-3: [(7, 3), (8, 4), (9, 5)]}
    # A rerun of the sweep makes the same trials.
    assert [t.model_dump() for t in _trials(space, base, 3)] == [t.model_dump() for t in trials]


def test_one_sample_of_a_grid_is_one_trial_per_point_on_the_job_seeds(tmp_path):
    space = _space(tmp_path, "candidates.m: {grid: [5, 8]}\n", JobConfig())
    ps, samples = param_space(space, 1)
    assert REPEAT not in ps and samples == 1
    trials = _trials(space, JobConfig(), 1)
    assert sorted(t.candidates.m for t in trials) == [5, 8]
    assert {_seeds(t) for t in trials} == {(0, 0)}


def test_sampled_space_draws_num_samples_configs_on_the_job_seeds(tmp_path):
    text = "train.lr: {loguniform: [1.0e-5, 1.0e-3]}\ncandidates.m: {grid: [5, 8]}\n"
    space = _space(tmp_path, text, JobConfig())
    assert not space.is_grid and repeats_per_point(space, 5) == 1
    ps, samples = param_space(space, 5)
    assert REPEAT not in ps and samples == 5
    trials = _trials(space, JobConfig(), 5)
    assert len(trials) == 10  # 5 samples x the 2 grid points, as Ray Tune does
    assert len({t.train.lr for t in trials}) == 10
    assert {_seeds(t) for t in trials} == {(0, 0)}  # same seeds: a fair comparison


def test_a_seed_the_space_names_is_not_overridden(tmp_path):
    space = _space(tmp_path, "train.seed: {grid: [10, 20]}\n", JobConfig())
    trials = _trials(space, JobConfig(), 2)
    assert sorted(_seeds(t) for t in trials) == [(10, 0), (10, 1), (20, 0), (20, 1)]
    assert repeat_seeds(JobConfig(), 2, {"candidates.seed": 5}) == {"train.seed": 2}


def test_strategies_space_on_the_demo_job_repeats_every_strategy(tmp_path):
    """The shipped strategies grid on the demo job: every strategy (dark included) makes a valid
    trial config, and num_samples 2 runs each twice with different seeds."""
    base = load_config(ROOT / "jobs" / "demo.yaml")
    space = load_space(ROOT / "tune_spaces" / "strategies.yaml", base)
    trials = _trials(space, base, 2)
    seeds: dict[str, list[tuple[int, int]]] = {}
    for t in trials:
        seeds.setdefault(t.candidates.strategy, []).append(_seeds(t))
    assert seeds == {s: [(0, 0), (1, 1)] for s in ("random", "topk", "stratified", "dark")}
    dark = next(t for t in trials if t.candidates.strategy == "dark")
    assert dark.candidates.m <= dark.augment.n_rein and dark.eval.systems == ["student"]


@pytest.mark.parametrize(
    ("values", "mean", "std"),
    [
        ([0.2, 0.4, 0.6], 0.4, 0.2),  # deviations -0.2, 0, 0.2: sqrt(0.08 / 2)
        ([1.0, 2.0, 3.0, 4.0], 2.5, math.sqrt(5.0 / 3.0)),  # (2.25 + 0.25) * 2 / 3
        ([0.5, 0.5], 0.5, 0.0),
        ([0.3], 0.3, None),
        ([], None, None),
    ],
)
def test_mean_and_sample_std(values, mean, std):
    m, s = mean_std(values)
    assert m == (None if mean is None else pytest.approx(mean))
    assert s == (None if std is None else pytest.approx(std))


def _row(trial, strategy, value, repeat=0):
    return {"trial": trial, "candidates.strategy": strategy, REPEAT: repeat, "nDCG@10": value}


ROWS = [
    _row("a0", "topk", 0.30),
    _row("b0", "dark", 0.20),
    _row("a1", "topk", 0.10, 1),
    _row("b1", "dark", 0.24, 1),
    _row("c0", "random", None),  # failed
    _row("c1", "random", 0.5, 1),
]


def test_points_mean_std_and_n():
    points = point_rows(ROWS, ["candidates.strategy"], "nDCG@10", "max")
    # The best trial (c1, 0.5) is random's only one with the metric; topk's best trial (0.30)
    # beats dark's (0.24), but dark's mean 0.22 beats topk's 0.20.
    assert [p["candidates.strategy"] for p in points] == ["random", "dark", "topk"]
    random, dark, topk = points
    assert (random["n"], random["failed"], random["std"]) == (1, 1, None)
    assert random["mean"] == pytest.approx(0.5) and random["trials"] == ["c0", "c1"]
    assert (dark["n"], dark["failed"], dark["trials"]) == (2, 0, ["b0", "b1"])
    assert dark["mean"] == pytest.approx(0.22)
    assert dark["std"] == pytest.approx(math.sqrt(2 * 0.02**2))  # 0.0283
    assert topk["mean"] == pytest.approx(0.20) and topk["std"] == pytest.approx(math.sqrt(0.02))
    low = point_rows(ROWS, ["candidates.strategy"], "nDCG@10", "min")
    assert [p["candidates.strategy"] for p in low] == ["topk", "dark", "random"]
    assert (
        point_rows([_row("x", "dark", None)], ["candidates.strategy"], "nDCG@10", "max")[0]["mean"]
        is None
    )


def test_results_files_report_points_and_the_best_by_mean(tmp_path):
    base = JobConfig()
    rows = [
        {**r, "best_epoch": 1, "epochs": 1, "status": "done" if r["nDCG@10"] else "error"}
        for r in ROWS
    ]
    rows.sort(key=lambda r: -(r["nDCG@10"] or -1.0))
    params = ["candidates.strategy"]
    points = point_rows(rows, params, "nDCG@10", "max")
    # A point with a failed repeat still wins on its mean here: "random" is the best point.
    best_cfg = base.model_copy(
        update={"candidates": base.candidates.model_copy(update={"strategy": "random"})}
    )
    summary = TuneSummary(rows, points, points[0], best_cfg, 1.0)
    run = RunDir.open(str(tmp_path / "run"))
    write_results(run, summary, params, "nDCG@10", repeats=True)

    with open(run.path("tune/points.csv")) as f:
        table = list(csv.DictReader(f))
    dark = next(r for r in table if r["candidates.strategy"] == "dark")
    assert (dark["n"], dark["failed"], dark["trials"]) == ("2", "0", "b1 b0")
    assert float(dark["nDCG@10_mean"]) == pytest.approx(0.22)
    assert float(dark["nDCG@10_std"]) == pytest.approx(0.028284, abs=1e-6)
    with open(run.path("tune/results.csv")) as f:
        trials = list(csv.DictReader(f))
    assert [r["trial"] for r in trials] == ["c1", "a0", "b1", "b0", "a1", "c0"]
    assert {r[REPEAT] for r in trials} == {"0", "1"}
    md = open(run.path("tune/results.md")).read()
    assert "| candidates.strategy | n | nDCG@10 | failed |" in md
    assert "| dark | 2 | 0.22 ± 0.02828 | 0 |" in md
    text = open(run.path("tune/best.yaml")).read()
    assert text.startswith("# Best grid point of the sweep")
    assert "(nDCG@10 0.5, mean over 1 of its 2 repeats (1 failed): trials c1, c0" in text
    assert yaml.safe_load(text)["candidates"]["strategy"] == "random"
