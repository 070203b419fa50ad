"""Run directory commits and the pipeline's skip / re-run logic, on a toy stage registry."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.cli import main
from raykd.config import validate
from raykd.run_dir import JOB_FILE, RunDir
from raykd.stages import pipeline
from raykd.stages.pipeline import Stage, StageResult, is_current, run_stage

CALLS: list[str] = []


def write_numbers(ctx):
    CALLS.append(ctx.stage)
    n = ctx.cfg.candidates.m
    path = ctx.staging.path("numbers/part-0.parquet")
    ctx.run.fs.create_dir(path.rsplit("/", 1)[0])
    pq.write_table(pa.table({"x": list(range(n))}), path)
    return StageResult(rows={"numbers": n})


def double(ctx):
    CALLS.append(ctx.stage)
    x = pq.read_table(ctx.run.path("numbers")).column("x").to_pylist()
    ctx.run.fs.create_dir(ctx.staging.path("doubled"))
    pq.write_table(pa.table({"y": [2 * v for v in x]}), ctx.staging.path("doubled/p.parquet"))
    if ctx.cfg.candidates.seed == 13:
        raise RuntimeError("interrupted")
    return StageResult(rows={"doubled": len(x)})


TOY = (
    Stage("numbers", f"{__name__}:write_numbers", ("candidates.m",), (), ("numbers",)),
    Stage("double", f"{__name__}:double", ("candidates.seed",), ("numbers",), ("doubled",)),
)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "STAGES", TOY)
    CALLS.clear()
    return lambda **c: validate(
        {"run_dir": str(tmp_path / "run"), "candidates": {"strategy": "random", **c}}
    )


def test_rerun_skips_current_stages_and_reruns_downstream_of_a_change(toy):
    cfg = toy(m=3)
    run = RunDir.open(cfg.run_dir)
    assert pipeline.run_pipeline(cfg, run) == ["numbers", "double"]
    assert pipeline.run_pipeline(cfg, run) == []
    # Changing an upstream stage's config re-runs it and everything downstream.
    assert pipeline.run_pipeline(toy(m=4), run) == ["numbers", "double"]
    assert pq.read_table(run.path("doubled")).column("y").to_pylist() == [0, 2, 4, 6]
    # Changing only the downstream config re-runs only downstream.
    assert pipeline.run_pipeline(toy(m=4, seed=1), run) == ["double"]
    assert CALLS == ["numbers", "double", "numbers", "double", "double"]
    manifest = run.read_json("manifests/double.json")
    assert manifest["rows"] == {"doubled": 4} and manifest["inputs"]["upstream"]["numbers"]
    assert "candidates:" in Path(run.path(JOB_FILE)).read_text()


def test_failed_stage_leaves_previous_output_and_is_not_current(toy):
    run = RunDir.open(toy().run_dir)
    pipeline.run_pipeline(toy(m=2), run)
    before = pq.read_table(run.path("doubled")).to_pylist()
    with pytest.raises(RuntimeError, match="interrupted"):
        pipeline.run_pipeline(toy(m=2, seed=13), run)
    assert pq.read_table(run.path("doubled")).to_pylist() == before
    assert not Path(run.path(".staging")).exists()  # discarded, and the empty folder pruned
    assert not is_current(TOY[1], toy(m=2, seed=13), run)
    assert is_current(TOY[1], toy(m=2), run)


def test_missing_output_is_an_error_and_needs_upstream(toy):
    cfg = toy()
    run = RunDir.open(cfg.run_dir)
    with pytest.raises(RuntimeError, match="needs 'numbers' to have run first"):
        run_stage(TOY[1], cfg, run)
    bad = Stage("bad", f"{__name__}:write_numbers", (), (), ("elsewhere",))
    with pytest.raises(RuntimeError, match=r"did not write \['elsewhere'\]"):
        run_stage(bad, cfg, run)


def test_commit_replaces_a_file_and_a_folder(tmp_path):
    run = RunDir.open(str(tmp_path / "r"))
    for content in ("one", "two"):
        staging = run.new_staging("s")
        run.fs.create_dir(staging.path("out"))
        with run.fs.open_output_stream(staging.path("out/f.txt")) as f:
            f.write(content.encode())
        staging.commit("out")
        staging.discard()
    assert (tmp_path / "r" / "out" / "f.txt").read_text() == "two"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["out"]


def test_stage_command_reads_the_run_dirs_config(toy, capsys):
    cfg = toy(m=2)
    run = RunDir.open(cfg.run_dir)
    pipeline.run_pipeline(cfg, run)
    assert main(["config", "show", "--run-dir", cfg.run_dir, "--config", run.path(JOB_FILE)]) == 0
    assert "m: 2" in capsys.readouterr().out
    assert main(["prepare", "--run-dir", str(run.root) + "/nowhere"]) == 2
    assert "no job.yaml" in capsys.readouterr().err
