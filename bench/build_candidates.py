"""Build-stage cost: the Ray Data build vs the same assembly in one driver process.

Writes a synthetic scored run directory (``--queries`` x ``--examples`` examples each: one
positive, negatives, a reinforced twin per negative up to ``--rein``, 5 masked positives), then
times ``run_stage(build)`` per strategy (a fresh run dir each, Ray already started) against the
baseline: pyarrow reads + ``assemble_group`` per qid in the driver (no Ray, no shuffle), which
is what the stage does minus the distribution. Prints seconds, rows/s and the ratio.

    python bench/build_candidates.py --queries 300 --examples 120
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

STRATEGIES = ("random", "topk", "stratified", "dark")


def write_inputs(root: Path, n_queries: int, n_examples: int, n_rein: int, seed: int) -> None:
    from raykd.data.schemas import EXAMPLES, POOL, QUERIES, SCORES

    rng = np.random.default_rng(seed)
    ratios = [0.15, 0.25, 0.35, 0.45, 0.55]
    n_neg = n_examples - 1 - len(ratios) - n_rein
    if n_neg < n_rein:
        raise SystemExit("--examples too small for the reinforced and masked examples")
    ex: dict[str, list] = {k: [] for k in EXAMPLES.names}
    pool: dict[str, list] = {k: [] for k in POOL.names}
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    for q in range(n_queries):
        qid = f"q{q:06d}"
        rows = [("pos", "p0", None, None)]
        rows += [("neg", f"n{j}", None, None) for j in range(n_neg)]
        rows += [("rein", "p0", f"n{j}", None) for j in range(n_rein)]
        rows += [("mask", "p0", None, r) for r in ratios]
        for kind, pid, pid2, r in rows:
            eid = {
                "rein": f"{qid}|rein|{pid}|{pid2}",
                "mask": f"{qid}|mask|{pid}|{r or 0:.2f}",
            }.get(kind, f"{qid}|{kind}|{pid}")
            ex["qid"].append(qid)
            ex["eid"].append(eid)
            ex["kind"].append(kind)
            ex["pid"].append(pid)
            ex["pid2"].append(pid2)
            ex["mask_ratio"].append(r)
            ex["text"].append(" ".join(rng.choice(words, 60)))
        for j in range(n_neg):
            pool["qid"].append(qid)
            pool["pid"].append(f"n{j}")
            pool["rank"].append(j + 1)
            pool["score"].append(0.0)
            pool["source"].append("bm25" if j < n_neg // 2 else "random")
    examples = pa.table(ex, schema=EXAMPLES)
    scores = pa.table(
        {
            "qid": examples["qid"],
            "eid": examples["eid"],
            "kind": examples["kind"],
            "score": rng.normal(size=examples.num_rows).astype(np.float32),
        },
        schema=SCORES,
    )
    qids = sorted(set(ex["qid"]))
    tables = {
        "queries/train": pa.table({"qid": qids, "text": [f"query {q}" for q in qids]}, QUERIES),
        "examples": examples,
        "scores": scores,
        "pool": pa.table(pool, schema=POOL),
    }
    for rel, table in tables.items():
        (root / rel).mkdir(parents=True)
        pq.write_table(table, root / rel / "part-0.parquet")


def baseline(root: Path, strategy: str) -> float:
    """Seconds for the driver-only assembly: read everything, group by qid, assemble."""
    from raykd.candidates import assemble as a
    from raykd.config import CandidatesSection

    start = time.perf_counter()
    inputs = (
        ("queries/train", a.SRC_QUERY),
        ("examples", a.SRC_EXAMPLE),
        ("scores", a.SRC_SCORE),
        ("pool", a.SRC_POOL),
    )
    parts = [a.to_group(pq.read_table(root / rel), src) for rel, src in inputs]
    table = pa.concat_tables(parts).sort_by("qid")
    qids = table["qid"]
    bounds = np.flatnonzero(pc.not_equal(qids[1:], qids[:-1]).to_numpy(zero_copy_only=False)) + 1
    starts = [0, *bounds.tolist()]
    ends = [*bounds.tolist(), table.num_rows]
    cand = CandidatesSection(strategy=strategy, m=10)
    out = [
        a.assemble_group(table.slice(i, j - i), cand, 1.0, "examples", "scores")
        for i, j in zip(starts, ends, strict=True)
    ]
    pa.concat_tables(out).sort_by([("qid", "ascending"), ("pos_pid", "ascending")])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--examples", type=int, default=120)
    ap.add_argument("--rein", type=int, default=20)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    args = ap.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from raykd.config import validate
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name

    print(f"load average before: {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="raykd-bench-build-"))
    try:
        inputs = tmp / "inputs"
        write_inputs(inputs, args.queries, args.examples, args.rein, seed=0)
        n_rows = pq.ParquetFile(next((inputs / "examples").glob("*.parquet"))).metadata.num_rows
        print(f"{args.queries} queries x {args.examples} examples = {n_rows} example rows")
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"{'strategy':<11} {'ray build s':>11} {'driver s':>9} {'ratio':>6} {'rows/s':>8}")
        for strategy in args.strategies.split(","):
            root = tmp / f"run-{strategy}"
            shutil.copytree(inputs, root)
            run = RunDir.open(str(root))
            run.write_json("manifests/score.json", {"fingerprint": "bench"})
            cfg = validate({"run_dir": str(root), "candidates": {"strategy": strategy, "m": 10}})
            start = time.perf_counter()
            run_stage(stage_by_name("build"), cfg, run)
            ray_s = time.perf_counter() - start
            rows = run.read_json("manifests/build.json")["rows"][f"train/{strategy}"]
            base_s = baseline(inputs, strategy)
            print(
                f"{strategy:<11} {ray_s:>11.2f} {base_s:>9.2f} {ray_s / base_s:>6.2f} "
                f"{rows / ray_s:>8.0f}"
            )
        print(f"load average after: {os.getloadavg()}")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
