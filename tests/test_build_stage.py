"""The build stage under Ray: rows, counts and diagnostics in its manifest, byte-identical files
for a seed, and nothing written for bad input. The per-query maths is in test_build.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raykd.config import validate
from raykd.data.schemas import TRAIN
from raykd.errors import InputError
from raykd.run_dir import RunDir
from tests.test_build import (
    EXAMPLE_ROWS,
    check_row,
    examples_table,
    input_tables,
    log_softmax_first,
    scores_table,
)


def write_run(root: Path, examples=None, scores=None) -> RunDir:
    run = RunDir.open(str(root))
    for rel, table in input_tables(examples, scores).items():
        (root / rel).mkdir(parents=True)
        pq.write_table(table, root / rel / "part-0.parquet")
    run.write_json("manifests/score.json", {"stage": "score", "fingerprint": "hand-made"})
    return run


def build(root: Path, examples=None, scores=None, **candidates):
    from raykd.stages.pipeline import run_stage, stage_by_name

    run = write_run(root, examples, scores)
    cfg = validate({"run_dir": str(root), "candidates": {"m": 2, **candidates}})
    run_stage(stage_by_name("build"), cfg, run)
    manifest = run.read_json("manifests/build.json")
    out = root / "train" / cfg.candidates.strategy
    table = pq.read_table(sorted(out.glob("*.parquet")))
    assert table.schema.equals(TRAIN)
    rows = {(r["qid"], r["pos"]): r for r in table.to_pylist()}
    return rows, manifest, out


def _entropy(s):
    p = np.exp(s) / np.exp(s).sum()
    return float(-(p * np.log(p)).sum())


def test_stage_writes_sorted_rows_counts_and_diagnostics(ray_session, tmp_path):
    rows, manifest, out = build(tmp_path, strategy="topk", margin=1.5, on_short="fill")
    # margin 1.5 drops N1 from q1, X3 from pa, X3 and X1 from pb (threshold 1 - 1.5).
    check_row(
        rows["q1", "P1"],
        ["N3", "N4"],
        [5.0, 2.0, 0.5],
        ["pos", "neg", "neg"],
        log_softmax_first(5.0, 2.0, 0.5),
    )
    check_row(
        rows["q2", "PA"],
        ["X1", "X2"],
        [2.0, 0.0, -2.0],
        ["pos", "neg", "neg"],
        log_softmax_first(2.0, 0.0, -2.0),
    )
    check_row(rows["q2", "PB"], ["X2"], [1.0, -2.0], ["pos", "neg"], log_softmax_first(1.0, -2.0))
    table = pq.read_table(out)
    assert table["qid"].to_pylist() == ["q1", "q2", "q2"]
    assert table["pos"].to_pylist() == ["P1", "PA", "PB"]
    assert [p.name for p in out.iterdir()] == ["part-00000.parquet"]
    info = manifest["info"]
    assert manifest["rows"] == {"train/topk": 3}
    assert (info["rows"], info["queries"], info["skipped_queries"]) == (3, 2, 1)
    assert (info["short_rows"], info["short_queries"]) == (1, 1)
    # Means over rows: the chosen sets, and positive + all original negatives (unfiltered).
    chosen = [[5.0, 2.0, 0.5], [2.0, 0.0, -2.0], [1.0, -2.0]]
    pools = [[5.0, 4.0, -1.0, 2.0, 0.5, -3.0], [2.0, 0.0, -2.0, 1.5], [1.0, 0.0, -2.0, 1.5]]
    d = info["diagnostics"]["topk"]
    assert d["chosen"]["variance"] == pytest.approx(np.mean([np.var(s) for s in chosen]))
    assert d["chosen"]["entropy"] == pytest.approx(np.mean([_entropy(s) for s in chosen]))
    assert d["chosen"]["n"] == pytest.approx(8 / 3)
    assert d["pool"]["variance"] == pytest.approx(np.mean([np.var(s) for s in pools]))
    assert d["pool"]["entropy"] == pytest.approx(np.mean([_entropy(s) for s in pools]))


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_seed_gives_byte_identical_files(ray_session, tmp_path):
    _, _, a = build(tmp_path / "a", strategy="stratified", n_strata=2, seed=7)
    _, _, b = build(tmp_path / "b", strategy="stratified", n_strata=2, seed=7)
    assert _files(a) and _files(a) == _files(b)


def test_missing_positive_names_the_query(ray_session, tmp_path):
    rows = [r for r in EXAMPLE_ROWS if r[:2] != ("q1", "pos")]
    with pytest.raises(InputError, match=r"training query 'q1' has no positive") as err:
        build(tmp_path, examples_table(rows), scores_table(rows), strategy="topk")
    assert err.value.path.endswith("examples")
    assert not (tmp_path / "train").exists()
