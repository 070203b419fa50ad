"""The config refuses nonsense before any stage runs: bounds on every number, constraints across
sections, unknown keys named with their line and the key meant, and sweeps whose every trial
validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from raykd.config import ConfigError, load_config
from raykd.tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
SPACES = sorted((ROOT / "tune_spaces").glob("*.yaml"))
DEMO = ROOT / "jobs" / "demo.yaml"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=-1", "train.lr: Input should be greater than 0"),
        ("train.lr=0", "train.lr: Input should be greater than 0"),
        ("train.lr=.nan", "train.lr: Input should be a finite number"),
        ("train.loss.teacher_temperature=.inf", "teacher_temperature: Input should be a finite"),
        ("train.warmup_steps=-1", "train.warmup_steps: Input should be greater than or equal"),
        ("eval.depth=0", "eval.depth: Input should be greater than or equal to 1"),
        ("mining.sources=[]", "mining.sources: List should have at least 1 item"),
        ("candidates.seed=-3", "candidates.seed: Input should be greater than or equal to 0"),
        ("mining.bm25.b=1.5", "mining.bm25.b: Input should be less than or equal to 1"),
        ("teacher.actors={min_actors: 3, max_actors: 2}", "min_actors 3 > max_actors 2"),
    ],
)
def test_numbers_are_bounded_by_what_they_mean(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert expected in str(err.value)
    assert "--set" in str(err.value)
    assert len(str(err.value).splitlines()) < 5


def test_an_empty_job_file_is_an_error(tmp_path):
    empty = tmp_path / "job.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="job.yaml: the config file is empty"):
        load_config(empty)


def test_unknown_key_names_its_line_and_the_key_meant(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("data:\n  format: demo\ncandidates:\n  m: 4\n  n_strats: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(job)
    assert f"{job}:5: candidates.n_strats: unknown key; did you mean 'n_strata'?" in str(err.value)
    with pytest.raises(ConfigError, match=r"--set: teacher\.actors\.batch_sise: unknown key; "):
        load_config(DEMO, ["teacher.actors.batch_sise=8"])
    with pytest.raises(ConfigError, match=r"mining\.bm25_k1: unknown key; it is now mining\.bm25"):
        load_config(DEMO, ["mining.bm25_k1=1.2"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["candidates.strategy=dark"], "candidates.n_masked 5 > 3 augment.mask_ratios"),
        (["candidates.strategy=dark", "candidates.m=12"], "augment.n_rein 8 < candidates.m 12"),
        (["candidates.n_strata=9"], "candidates.n_strata 9 > candidates.m 8"),
        (
            ["candidates.strategy=dark", "candidates.dark_base=stratified", "candidates.m=2"],
            "candidates.n_strata 4 > candidates.m 2",
        ),
        (["eval.rerank_depth=200"], "eval.rerank_depth 200 > eval.depth 100"),
        (["candidates.m=61", "candidates.n_strata=2"], "candidates.m 61 > 60, the most negatives"),
        (["candidates.strategy=dark", "train.loss=ranknet"], "'dark' is distilled with kl"),
    ],
)
def test_sections_must_agree(overrides, expected):
    # The demo job with n_masked at its default (5) and its 3 mask ratios, unless dark is unset.
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(
            DEMO, ["candidates.n_masked=5", *overrides] if "dark" in str(overrides) else overrides
        )


def test_constraints_bind_only_where_they_apply():
    # n_strata > m is harmless for random sets; m beyond the pool is allowed with on_short=fill;
    # rerank_depth > depth is harmless when the teacher does not rerank.
    load_config(DEMO, ["candidates.strategy=random", "candidates.n_strata=20"])
    load_config(DEMO, ["candidates.m=100", "candidates.n_strata=2", "candidates.on_short=fill"])
    load_config(DEMO, ["eval.rerank_depth=500", "eval.systems=[bm25, init]"])


# The sweeps the README and the spaces' comments pair with a job.
DOCUMENTED = {
    ("demo.yaml", "strategies.yaml"),
    ("demo.yaml", "stratified.yaml"),
    ("scifact.yaml", "scifact_lr.yaml"),
    ("scifact.yaml", "strategies.yaml"),
    ("tune_msmarco.yaml", "adam.yaml"),
    ("tune_msmarco.yaml", "stratified.yaml"),
    ("tune_msmarco.yaml", "strategies.yaml"),
}


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.name)
@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_shipped_job_and_space_pair_validates_up_front(job, space):
    """Every combination of a space's values is applied to the job before a sweep starts: a
    pairing either validates for every trial, or fails at once naming the space and the keys."""
    try:
        load_space(space, load_config(job))
    except ConfigError as err:
        assert (job.name, space.name) not in DOCUMENTED, str(err)
        assert str(err).startswith(f"{space}: "), str(err)
        assert len(str(err).splitlines()) <= 4, str(err)
