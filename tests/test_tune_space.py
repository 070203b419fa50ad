"""Search-space files: each distribution, the shipped spaces, and every kind of bad entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from raykd.config import ConfigError, JobConfig
from raykd.tuning.space import apply_values, load_space

ROOT = Path(__file__).resolve().parents[1]


def _space(tmp_path: Path, text: str, base: JobConfig | None = None):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return load_space(p, base or JobConfig())


def test_every_distribution_type(tmp_path):
    from ray import tune

    space = _space(
        tmp_path,
        "train.lambda_sup: {loguniform: [0.001, 0.5]}\n"
        "train.lr: {uniform: [1.0e-5, 1.0e-4]}\n"
        "train.epochs: {randint: [1, 4]}\n"
        "candidates.m: {choice: [5, 10]}\n"
        "candidates.strategy: {grid: [topk, dark]}\n",
    )
    ps = space.to_tune()
    assert isinstance(ps["train.lambda_sup"], tune.search.sample.Float)
    assert isinstance(ps["train.lambda_sup"].get_sampler(), tune.search.sample.LogUniform)
    assert (ps["train.lr"].lower, ps["train.lr"].upper) == (1e-5, 1e-4)
    assert isinstance(ps["train.epochs"], tune.search.sample.Integer)
    assert (ps["train.epochs"].lower, ps["train.epochs"].upper) == (1, 4)
    assert ps["candidates.m"].categories == [5, 10]
    assert ps["candidates.strategy"] == {"grid_search": ["topk", "dark"]}
    assert space.has_grid


def test_sampled_values_stay_in_bounds(tmp_path):
    space = _space(tmp_path, "train.lambda_sup: {loguniform: [0.001, 0.5]}\n")
    dom = space.to_tune()["train.lambda_sup"]
    samples = dom.sample(size=200)
    assert all(0.001 <= s <= 0.5 for s in samples)


def test_shipped_spaces_load():
    for name in ("adam", "stratified", "strategies"):
        space = load_space(ROOT / "tune_spaces" / f"{name}.yaml", JobConfig())
        assert space.params
    adam = load_space(ROOT / "tune_spaces" / "adam.yaml", JobConfig()).params
    assert adam["train.lambda_sup"].args == (0.001, 0.5)
    assert adam["candidates.m"].args == (5, 10, 15, 20)
    strategies = load_space(ROOT / "tune_spaces" / "strategies.yaml", JobConfig())
    assert strategies.params["candidates.strategy"].args == ("random", "topk", "stratified", "dark")


def test_unknown_path_names_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"space\.yaml: train\.lamda_sup: not a config field"):
        _space(tmp_path, "train.lamda_sup: {uniform: [0, 1]}\n")
    with pytest.raises(ConfigError, match="not a config field"):
        _space(tmp_path, "train: {choice: [1]}\n")  # a section, not a field


def test_upstream_section_cannot_be_tuned(tmp_path):
    with pytest.raises(ConfigError, match=r"mining\.depth: cannot be tuned"):
        _space(tmp_path, "mining.depth: {choice: [10, 20]}\n")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("candidates.m: {choice: [5, many]}", r"candidates\.m: value 'many' is invalid"),
        ("candidates.strategy: {grid: [topk, best]}", r"value 'best' is invalid"),
        ("candidates.m: {randint: [0, 3]}", r"value 0 is invalid"),  # m >= 1
        ("train.lambda_sup: {uniform: [-1.0, 0.5]}", r"value -1.0 is invalid"),  # ge=0
        ("train.epochs: {randint: [1.5, 3]}", "randint bounds must be integers"),
        ("train.lr: {loguniform: [0, 1]}", "loguniform needs lo > 0"),
        ("train.lr: {uniform: [1, 1]}", "needs lo < hi"),
        ("train.lr: {uniform: [1]}", r"needs \[lo, hi\]"),
        ("train.lr: {normal: [0, 1]}", "unknown distribution 'normal'"),
        ("train.lr: 0.1", "expected one of"),
        ("train.lr: {choice: []}", "non-empty list"),
    ],
)
def test_bad_entries(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as err:
        _space(tmp_path, text + "\n")
    assert "space.yaml" in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "nope.yaml", JobConfig())
    with pytest.raises(ConfigError, match="expected a mapping"):
        _space(tmp_path, "")


def test_apply_values_sets_nested_fields():
    cfg = apply_values(JobConfig(), {"train.lambda_sup": 0.2, "candidates.m": 7})
    assert cfg.train.lambda_sup == 0.2 and cfg.candidates.m == 7
    assert JobConfig().train.lambda_sup == 0.01  # the base is not modified
