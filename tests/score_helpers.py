"""Test helpers for the score stage: a run with hand-made examples and upstream manifests."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raykd.config import JobConfig
from raykd.data.schemas import EXAMPLES
from raykd.run_dir import RunDir


def make_examples(run: RunDir, split: str, n_queries: int, n_neg: int, seed: int = 0) -> pa.Table:
    """pos / neg / rein / mask rows for the first ``n_queries`` training queries."""
    rng = random.Random(seed)
    corpus = pq.read_table(run.path("corpus"), filesystem=run.fs)
    text_of = dict(zip(corpus["pid"].to_pylist(), corpus["text"].to_pylist(), strict=True))
    pids = sorted(text_of)
    qrels = pq.read_table(run.path(f"qrels/{split}"), filesystem=run.fs)
    positives: dict[str, str] = {}
    for qid, pid in zip(qrels["qid"].to_pylist(), qrels["pid"].to_pylist(), strict=True):
        positives.setdefault(qid, pid)
    rows: dict[str, list] = {name: [] for name in EXAMPLES.names}

    def add(*values):
        for name, value in zip(EXAMPLES.names, values, strict=True):
            rows[name].append(value)

    for qid in sorted(positives)[:n_queries]:
        pos = positives[qid]
        add(qid, f"{qid}/pos", "pos", pos, None, None, text_of[pos])
        for j, neg in enumerate(rng.sample(pids, n_neg)):
            add(qid, f"{qid}/neg{j}", "neg", neg, None, None, text_of[neg])
            rein = f"{text_of[pos]} [SEP] {text_of[neg]}"
            add(qid, f"{qid}/rein{j}", "rein", pos, neg, None, rein)
        words = text_of[pos].split()
        masked = [w if rng.random() > 0.3 else "[MASK]" for w in words]
        add(qid, f"{qid}/mask", "mask", pos, None, 0.3, " ".join(masked))
    return pa.table(rows, schema=EXAMPLES)


def score_run(
    base: Path, dest: Path, cfg: JobConfig, examples: pa.Table, rows_per_file: int = 200
) -> tuple[JobConfig, RunDir]:
    """A copy of a prepared run dir with ``examples/`` and mine/augment manifests committed."""
    shutil.copytree(base, dest)
    cfg = cfg.model_copy(update={"run_dir": str(dest)})
    run = RunDir.open(str(dest))
    out = dest / "examples"
    out.mkdir()
    for i in range(0, max(examples.num_rows, 1), rows_per_file):
        pq.write_table(examples.slice(i, rows_per_file), out / f"part-{i:06d}.parquet")
    for stage in ("mine", "augment"):
        run.write_json(f"manifests/{stage}.json", {"stage": stage, "fingerprint": "test"})
    return cfg, run


def with_teacher(cfg: JobConfig, **fields) -> JobConfig:
    dumped = cfg.model_dump()
    dumped["teacher"].update(fields)
    return JobConfig.model_validate(dumped)
