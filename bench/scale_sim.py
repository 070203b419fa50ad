"""Scale simulation: the real stages on synthetic artifacts of MS MARCO's shape, at fractions of it.

At fraction f it writes, streamed in chunks through ``FixedLayoutWriter`` (never a whole table in
memory): a corpus of f x 8,841,823 passages, f x 502,939 training queries with one positive each,
a pool of 200 negatives per query (100 "bm25" + 100 "random"), ADAM's dark examples at the
paper's counts (10 reinforced negatives, 5 masked positives: 216 examples per query, 108.6M at
f = 1) and their scores from a hash-based synthetic teacher. Passage texts come from a bank of
65,536 random-word texts of 20-92 words (mean 56, MS MARCO's); a reinforced text is its two
passages joined by [SEP], a masked positive keeps its positive's text (same size).

Then it runs each stage in a fresh subprocess with its own local Ray (2 CPUs, a capped object
store so that large sizes must spill): ``build`` per strategy and ``report`` on the synthetic run
dir, and ``mine`` (random source, 200 per query) then ``augment`` on a copy of its corpus,
queries and qrels. Per stage and size it prints wall time, rows/s of the stage's main table
(build, report: scores/ read; mine: pool/ written; augment: examples/ written), the driver's peak
RSS (VmHWM) and peak private memory, the largest worker's peak RSS and the workers' summed peak
private memory (both sampled every 0.2 s), and the object store's spilled MiB. Measurements are
merged into ``--results`` per (fraction, stage), so sizes can be run separately. The baseline is
the smallest size: between sizes it prints time ratio / size ratio (1 = linear) and the memory
ratios, and flags super-linear time (> 1.5) and driver private memory growth (> 1.25).

    python bench/scale_sim.py --fractions 0.001 0.01 --stages build --strategies random dark
    python bench/scale_sim.py --fractions 0.03 --strategies random dark
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from build_candidates import STRATEGIES
from streaming_memory import _peak_rss_mib, child_result

N_PASSAGES = 8_841_823  # MS MARCO passage corpus
N_QUERIES = 502_939  # MS MARCO train queries with a judged positive
N_BM25 = N_RANDOM = 100  # pool of 200 per query
N_REIN = 10  # ADAM: m = 10 reinforced twins of the first negatives
MASK_RATIOS = (0.15, 0.25, 0.35, 0.45, 0.55)
BANK = 1 << 16  # distinct passage texts
QUERY_CHUNK = 2_000  # queries per generated chunk (432k example rows)
PASSAGE_CHUNK = 500_000
ROWS_PER_FILE = 1 << 20
STAGES = ("build", "report", "mine", "augment")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64: the synthetic teacher's and the id layout's cheap hash."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit(x: np.ndarray) -> np.ndarray:
    return (_mix(x) >> np.uint64(11)).astype(np.float64) / 2.0**53


def _bank(seed: int) -> pa.Array:
    from streaming_memory import _vocab

    rng = np.random.default_rng(seed)
    words = np.array(_vocab(rng), dtype=object)
    lengths = rng.integers(20, 93, size=BANK)
    idx = rng.integers(0, len(words), size=(BANK, 92))
    return pa.array([" ".join(words[idx[i, : lengths[i]]]) for i in range(BANK)], pa.string())


def _strs(a: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(a), pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "|")


def _text_of(pids: np.ndarray, bank: pa.Array) -> pa.Array:
    return bank.take(pa.array(_mix(pids) % np.uint64(BANK)))


def _query_chunk(q: np.ndarray, n_pass: int, bank: pa.Array) -> dict[str, pa.Table]:
    """Queries, qrels, pool, examples and scores of the queries ``q``."""
    from raykd.data.schemas import EXAMPLES, POOL, QRELS, QUERIES, SCORES

    n_q, n_neg = len(q), N_BM25 + N_RANDOM
    qid = _strs(q)
    pos = (_mix(q) % np.uint64(n_pass)).astype(np.int64)
    # Distinct negatives per query, never its positive: a stride through the corpus.
    step = max(1, n_pass // (n_neg + 1))
    neg = (pos[:, None] + 1 + np.arange(n_neg) * step) % n_pass
    rank = np.tile(np.r_[1 : N_BM25 + 1, 1 : N_RANDOM + 1], n_q).astype(np.int32)
    is_bm25 = np.tile(np.arange(n_neg) < N_BM25, n_q)
    pool = pa.table(
        [
            pa.array(np.repeat(q, n_neg)).cast(pa.string()),
            _strs(neg.ravel()),
            rank,
            np.where(is_bm25, 30.0 - 0.1 * rank, 0.0).astype(np.float32),
            pa.array(np.where(is_bm25, "bm25", "random")),
        ],
        schema=POOL,
    )
    # Examples per query: pos, 200 neg, rein (pos x first 10 negatives), 5 mask.
    n_mask = len(MASK_RATIOS)
    per = 1 + n_neg + N_REIN + n_mask
    kind = np.array(["pos"] + ["neg"] * n_neg + ["rein"] * N_REIN + ["mask"] * n_mask)
    pid = np.concatenate([pos[:, None], neg, np.repeat(pos[:, None], N_REIN + n_mask, 1)], 1)
    pid2 = np.full((n_q, per), -1)
    pid2[:, 1 + n_neg : 1 + n_neg + N_REIN] = neg[:, :N_REIN]
    ratio = np.full((n_q, per), np.nan, dtype=np.float32)
    ratio[:, per - n_mask :] = MASK_RATIOS
    pid, pid2, ratio = pid.ravel(), pid2.ravel(), ratio.ravel()
    kinds = pa.array(np.tile(kind, n_q))
    qids = pa.array(np.repeat(q, per)).cast(pa.string())
    pid_s, pid2_s = _strs(pid), pc.if_else(pa.array(pid2 >= 0), _strs(pid2), None)
    ratio_a = pa.array(ratio, from_pandas=True)
    # eid tails as raykd.mining.dark_examples writes them: "|pid2" or "|0.15".
    tail = pc.coalesce(pid2_s, pc.utf8_slice_codeunits(pc.cast(ratio_a, pa.string()), 0, 4))
    eid = pc.if_else(pc.is_valid(tail), _join(qids, kinds, pid_s, tail), _join(qids, kinds, pid_s))
    texts = _text_of(pid, bank)
    texts = pc.if_else(
        pc.is_valid(pid2_s),
        pc.binary_join_element_wise(texts, _text_of(np.maximum(pid2, 0), bank), " [SEP] "),
        texts,
    )
    examples = pa.table([qids, eid, kinds, pid_s, pid2_s, ratio_a, texts], schema=EXAMPLES)
    # The synthetic teacher: positive high, bm25 negatives by rank, random low, dark in between,
    # plus hash noise; a cheap stand-in for a cross-encoder's logits.
    k = np.tile(np.arange(per), n_q)
    base = np.r_[8.0, 6 - 0.05 * np.r_[1 : N_BM25 + 1], [-4.0] * N_RANDOM, [3.0] * N_REIN]
    base = np.tile(np.r_[base, 8 - 10 * np.array(MASK_RATIOS)], n_q)
    noise = 4 * _unit(np.repeat(q, per) * per + k) - 2
    scores = pa.table(
        [qids, eid, kinds, (base + noise).astype(np.float32)],
        schema=SCORES,
    )
    return {
        "queries/train": pa.table(
            [qid, pc.utf8_slice_codeunits(_text_of(q, bank), 0, 36)], QUERIES
        ),
        "qrels/train": pa.table([qid, _strs(pos), np.ones(n_q, np.int32)], QRELS),
        "pool": pool,
        "examples": examples,
        "scores": scores,
    }


def generate(root: Path, fraction: float, seed: int = 0) -> dict[str, int]:
    """The synthetic run dir at ``fraction`` of MS MARCO, reused when already complete."""
    from raykd.data.parquet import FixedLayoutWriter
    from raykd.data.schemas import CORPUS, EXAMPLES, POOL, QRELS, QUERIES, SCORES

    stamp = root / "generated.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    n_pass, n_q = round(N_PASSAGES * fraction), round(N_QUERIES * fraction)
    bank = _bank(seed)
    fs = pafs.LocalFileSystem()
    schemas = {"queries/train": QUERIES, "qrels/train": QRELS, "pool": POOL}
    schemas |= {"examples": EXAMPLES, "scores": SCORES, "corpus": CORPUS}
    writers = {
        rel: FixedLayoutWriter(fs, str(root / rel), s, 1 << 16, ROWS_PER_FILE)
        for rel, s in schemas.items()
    }
    for lo in range(0, n_pass, PASSAGE_CHUNK):
        p = np.arange(lo, min(n_pass, lo + PASSAGE_CHUNK))
        texts = _text_of(p, bank)
        writers["corpus"].write(pa.table([_strs(p), texts, pa.repeat("", len(p))], CORPUS))
    for lo in range(0, n_q, QUERY_CHUNK):
        for rel, t in _query_chunk(np.arange(lo, min(n_q, lo + QUERY_CHUNK)), n_pass, bank).items():
            writers[rel].write(t)
    rows = {rel: w.close() for rel, w in writers.items()}
    # Stand-ins for the upstream manifests the stages check (build: score; mine: prepare;
    # report: eval, whose outputs it finds none of: its results table stays empty).
    (root / "manifests").mkdir()
    for stage in ("prepare", "score", "eval"):
        (root / "manifests" / f"{stage}.json").write_text('{"fingerprint": "scale_sim"}')
    gib = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 2**30
    print(f"generated f={fraction}: {rows} ({gib:.2f} GiB) in {time.perf_counter() - start:.0f} s")
    stamp.write_text(json.dumps(rows))
    return rows


class MemorySampler(threading.Thread):
    """Peaks of the driver's private memory, of one Ray worker's RSS and of all workers' private
    memory. Private = RSS minus shared pages: a process that reads objects maps the object
    store's shared memory, whose touched pages count in its RSS (and VmHWM) up to the store's
    size, however little of it the process holds."""

    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period, self.stop = period, threading.Event()
        self.max_rss = self.max_private = self.driver_private = 0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(self.period):
            m = me.memory_info()
            self.driver_private = max(self.driver_private, m.rss - m.shared)
            private = 0
            for p in me.children(recursive=True):
                try:
                    if not p.name().startswith("ray::"):
                        continue
                    m = p.memory_info()
                except psutil.Error:
                    continue
                self.max_rss = max(self.max_rss, m.rss)
                private += m.rss - m.shared
            self.max_private = max(self.max_private, private)


def child(args: argparse.Namespace) -> dict:
    """One stage in this process with its own local Ray; returns the measurements."""
    import ray

    from raykd.config import validate
    from raykd.on_ray.session import use_parquet_reader_v1
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name

    use_parquet_reader_v1()
    ray.init(
        num_cpus=args.num_cpus,
        object_store_memory=args.object_store_mib * 2**20,
        include_dashboard=False,
        logging_level="ERROR",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    cfg = {
        "run_dir": args.run_dir,
        "teacher": {"kind": "bm25"},  # augment masks with literal [MASK]: no tokenizer to load
        "mining": {"sources": ["random"], "n_random": N_BM25 + N_RANDOM},
        "augment": {"n_rein": N_REIN, "mask_ratios": list(MASK_RATIOS)},
        "candidates": {"strategy": args.strategy or "random", "m": 10},
    }
    if args.strategy == "stratified":
        cfg["candidates"]["n_strata"] = 5
    run = RunDir.open(args.run_dir)
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    run_stage(stage_by_name(args.child), validate(cfg), run, force=True)
    wall = time.perf_counter() - start
    sampler.stop.set()
    from ray._private.internal_api import memory_summary

    # This Ray's address: other local Rays (tests, another bench) make "auto" ambiguous.
    gcs = ray.get_runtime_context().gcs_address
    spilled = re.search(r"Spilled (\d+) MiB", memory_summary(gcs, stats_only=True))
    ray.shutdown()
    rows = run.read_json(f"manifests/{args.child}.json")["rows"]
    return {
        "wall_s": wall,
        "rows": rows,
        "driver_private_mib": sampler.driver_private / 2**20,
        "worker_peak_rss_mib": sampler.max_rss / 2**20,
        "workers_private_mib": sampler.max_private / 2**20,
        "spilled_mib": int(spilled.group(1)) if spilled else 0,
    }


def _run_child(stage: str, run_dir: Path, args: argparse.Namespace, strategy: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", stage, "--run-dir", str(run_dir)]
    cmd += ["--strategy", strategy, "--num-cpus", str(args.num_cpus)]
    cmd += ["--object-store-mib", str(args.object_store_mib)]
    return child_result(cmd, f"{stage} on {run_dir}")


def measure(fraction: float, args: argparse.Namespace, saved: dict, path: Path) -> None:
    """Every asked stage at one size, each measurement saved to ``path`` as soon as it is in."""
    root = Path(args.workdir) / f"f{fraction}"
    gen = generate(root / "synthetic", fraction)
    mined = root / "mined"
    runs = [("build", s) for s in args.strategies if "build" in args.stages]
    runs += [(stage, "") for stage in STAGES[1:] if stage in args.stages]
    for stage, strategy in runs:
        if stage == "mine":
            shutil.rmtree(mined, ignore_errors=True)
            for rel in ("corpus", "queries", "qrels", "manifests"):
                shutil.copytree(root / "synthetic" / rel, mined / rel)
        run_dir = mined if stage in ("mine", "augment") else root / "synthetic"
        r = _run_child(stage, run_dir, args, strategy)
        main_rel = {"mine": "pool", "augment": "examples"}.get(stage)
        r["main_rows"] = r["rows"][main_rel] if main_rel else gen["scores"]
        r["rows_per_s"] = r["main_rows"] / r["wall_s"]
        name = f"{stage} {strategy}".strip()
        saved.setdefault(str(fraction), {})[name] = r
        path.write_text(json.dumps(saved, indent=1))
        print(f"f={fraction} {name}: {json.dumps(r)}", flush=True)


def report(results: dict[float, dict[str, dict]]) -> None:
    sizes = sorted(results)
    print(
        "\n| stage | fraction | queries | main rows | wall s | rows/s | driver peak MiB | "
        "driver private MiB | worker peak MiB | workers private MiB | spilled MiB |\n"
        + "|---" * 11
        + "|"
    )
    names = dict.fromkeys(n for f in sizes for n in results[f])
    for stage in names:
        for f in (f for f in sizes if stage in results[f]):
            r = results[f][stage]
            print(
                f"| {stage} | {f} | {round(N_QUERIES * f):,} | {r['main_rows']:,} | "
                f"{r['wall_s']:.1f} | {r['rows_per_s']:,.0f} | {r['driver_peak_mib']:.0f} | "
                f"{r.get('driver_private_mib', np.nan):.0f} | "
                f"{r['worker_peak_rss_mib']:.0f} | {r['workers_private_mib']:.0f} | "
                f"{r['spilled_mib']} |"
            )
    if len(sizes) < 2:
        return
    print(
        "\ngrowth between consecutive sizes (time ratio / size ratio: 1 = linear)\n"
        "| stage | sizes | size x | time / size | driver private x | workers private / size "
        "| flags |\n|---|---|---|---|---|---|---|"
    )
    for stage in names:
        have = [f for f in sizes if stage in results[f]]
        for a, b in zip(have, have[1:], strict=False):
            ra, rb = results[a][stage], results[b][stage]
            size = rb["main_rows"] / ra["main_rows"]
            t = rb["wall_s"] / ra["wall_s"] / size
            # Runs from before the driver's private memory was sampled lack it.
            d = rb.get("driver_private_mib", np.nan) / ra.get("driver_private_mib", np.nan)
            w = rb["workers_private_mib"] / max(ra["workers_private_mib"], 1) / size
            flags = ["super-linear time"] * (t > 1.5) + ["driver grows"] * (d > 1.25)
            flags += ["super-linear worker memory"] * (w > 1.5)
            print(
                f"| {stage} | {a} -> {b} | {size:.1f} | {t:.2f} | {d:.2f} | {w:.2f} | "
                f"{', '.join(flags)} |"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.001, 0.01])
    p.add_argument("--workdir", default="/tmp/raykd-scale-sim")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of each stage's local Ray")
    p.add_argument("--object-store-mib", type=int, default=2048, help="object store per Ray")
    p.add_argument(
        "--results",
        default="/tmp/raykd-scale-sim/results.json",
        help="measurements merged into this file per (fraction, stage); tables cover all of it",
    )
    p.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
    if args.child:
        result = child(args)
        result["driver_peak_mib"] = _peak_rss_mib()
        print("RESULT " + json.dumps(result), flush=True)
        return
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    for f in sorted(args.fractions):
        measure(f, args, saved, path)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    report({float(f): r for f, r in saved.items()})


if __name__ == "__main__":
    main()
