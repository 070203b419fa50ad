"""Benchmark P4: the driver streams the corpus (prepare, corpus encoding) instead of loading it.

Generates two synthetic MS MARCO-layout collections (random words; default 1M and 100k
passages, the same queries for both), then runs ``raykd prepare`` and corpus encoding
(``raykd.on_ray.encoding.encode_corpus`` with a tiny encoder) on each in a fresh
subprocess, and reports the driver's peak RSS (printed by the subprocess at its end) and wall
time. Baseline: the smaller collection. A streaming driver keeps the
ratio of peak RSS large/small near 1 (target <= 1.3) while the corpus grows 10x.

    python bench/streaming_memory.py                       # 1M vs 100k (slow: see --encode-limit)
    python bench/streaming_memory.py --sizes 200000 20000  # smoke run
    python bench/streaming_memory.py --encode-limit 200000 # prepare on all, encode 200k of each

``--encode-limit N`` encodes only the first N passages of each prepared corpus (copied, streamed,
to ``corpus-limited/`` before the measured subprocess starts): encoding a million passages with
even a tiny model takes long on a few CPU cores. The encode ratio then compares N with the
small collection's size.

Peak RSS is the subprocess's ``VmHWM`` (``ru_maxrss`` where /proc is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

N_TRAIN_QUERIES = 1000
N_DEV_QUERIES = 200
VOCAB = 20_000
CHUNK = 100_000


def _vocab(rng) -> list[str]:
    import numpy as np

    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, size=VOCAB)
    return ["".join(letters[rng.integers(0, 26, size=n)]) for n in lengths]


def generate(root: Path, n_passages: int, seed: int = 0) -> None:
    """``collection.tsv``, ``queries.{train,dev}.tsv``, ``qrels.{train,dev}.tsv`` (TREC)."""
    import numpy as np

    stamp = root / "params.json"
    params = {"n_passages": n_passages, "seed": seed, "vocab": VOCAB}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = np.array(_vocab(rng), dtype=object)
    start = time.perf_counter()
    with open(root / "collection.tsv", "w", encoding="utf-8") as f:
        for lo in range(0, n_passages, CHUNK):
            n = min(CHUNK, n_passages - lo)
            lengths = rng.integers(20, 80, size=n)
            idx = rng.integers(0, VOCAB, size=(n, 80))
            rows = words[idx]
            f.writelines(f"{lo + i}\t{' '.join(rows[i, : lengths[i]])}\n" for i in range(n))
    qids = np.arange(N_TRAIN_QUERIES + N_DEV_QUERIES)
    targets = rng.choice(n_passages, size=len(qids), replace=False)
    for split, sel in (("train", qids[:N_TRAIN_QUERIES]), ("dev", qids[N_TRAIN_QUERIES:])):
        with (
            open(root / f"queries.{split}.tsv", "w", encoding="utf-8") as fq,
            open(root / f"qrels.{split}.tsv", "w", encoding="utf-8") as fr,
        ):
            for q in sel:
                text = " ".join(words[rng.integers(0, VOCAB, size=6)])
                fq.write(f"q{q}\t{text}\n")
                fr.write(f"q{q} 0 {targets[q]} 1\n")
    stamp.write_text(json.dumps(params))
    size = (root / "collection.tsv").stat().st_size
    print(
        f"generated {n_passages:,} passages ({size / 2**20:.0f} MiB) in "
        f"{time.perf_counter() - start:.1f} s at {root}",
        flush=True,
    )


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM belongs to the exec'd image; ru_maxrss would also carry
    the parent's RSS at fork time across the exec (a Linux quirk)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_prepare(args: argparse.Namespace) -> dict:
    from raykd.cli import main

    start = time.perf_counter()
    rc = main(
        [
            "prepare",
            "--run-dir",
            args.run_dir,
            "--config",
            args.config,
            "--set",
            f"ray.num_cpus={args.num_cpus}",
        ]
    )
    if rc:
        raise SystemExit(rc)
    return {"wall_s": time.perf_counter() - start}


def child_encode(args: argparse.Namespace) -> dict:
    from raykd.config import RaySection
    from raykd.on_ray.session import ensure_ray

    ensure_ray(RaySection(num_cpus=args.num_cpus))
    import ray

    from raykd.config import ActorPoolSpec
    from raykd.on_ray.encoding import encode_corpus
    from raykd.retrieval.dense_search import DenseModel

    ray.data.DataContext.get_current().enable_progress_bars = False
    corpus = "corpus-limited" if args.encode_limit else "corpus"
    out = Path(args.run_dir) / f"embeddings-{time.time_ns()}"
    start = time.perf_counter()
    n = encode_corpus(
        str(Path(args.run_dir) / corpus),
        str(out),
        DenseModel(args.model, passage_max_length=args.max_length),
        ActorPoolSpec(batch_size=args.batch_size, min_actors=args.actors, max_actors=args.actors),
        key="the bench's actors",
    )
    wall = time.perf_counter() - start
    ray.shutdown()
    return {"wall_s": wall, "encoded": n, "passages_per_s": n / wall}


def limit_corpus(run_dir: Path, limit: int, rows_per_file: int = 50_000) -> int:
    """Copy the first ``limit`` passages of the prepared corpus to ``corpus-limited/`` (streamed,
    in the parent: the measured child then encodes a smaller corpus in the same layout)."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    dest = run_dir / "corpus-limited"
    dest.mkdir()
    written, part, writer = 0, 0, None
    for batch in pads.dataset(run_dir / "corpus", format="parquet").to_batches(batch_size=10_000):
        batch = batch.slice(0, limit - written)
        if writer is None:
            writer = pq.ParquetWriter(dest / f"part-{part:04d}.parquet", batch.schema)
        writer.write_batch(batch)
        written += batch.num_rows
        if written >= limit or written // rows_per_file > part:
            writer.close()
            writer, part = None, part + 1
        if written >= limit:
            break
    if writer is not None:
        writer.close()
    return written


def _run_child(step: str, run_dir: Path, args: argparse.Namespace, config: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        step,
        "--run-dir",
        str(run_dir),
        "--config",
        str(config),
        "--num-cpus",
        str(args.num_cpus),
        "--model",
        args.model,
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--actors",
        str(args.actors),
        "--encode-limit",
        str(args.encode_limit or 0),
    ]
    return child_result(cmd, f"{step} on {run_dir}")


def child_result(cmd: list[str], what: str) -> dict:
    """Run a measuring subprocess and return the JSON of its last ``RESULT`` line."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{what} failed (rc {proc.returncode})")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs=2, default=[1_000_000, 100_000], metavar=("N", "M"))
    p.add_argument("--workdir", default="/tmp/raykd-bench-p4")
    p.add_argument("--model", default="demo:student", help="encoder (tiny: the demo student)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--actors", type=int, default=1, help="encoding actors")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--encode-limit", type=int, default=0, help="encode the first N passages only")
    p.add_argument("--child", choices=["prepare", "encode"], help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        result = (child_prepare if args.child == "prepare" else child_encode)(args)
        result["peak_rss_mib"] = _peak_rss_mib()
        print("RESULT " + json.dumps(result), flush=True)
        return

    from raykd.models import resolve_model

    args.model = resolve_model(args.model)  # once, before the children run in parallel
    work = Path(args.workdir)
    results: dict[int, dict[str, dict]] = {}
    for n in sorted(args.sizes, reverse=True):
        root = work / f"collection-{n}"
        generate(root, n)
        config = work / f"job-{n}.yaml"
        config.write_text(
            f"data: {{format: msmarco, path: {root}, splits: {{train: train, eval: dev}}}}\n"
        )
        run_dir = work / f"run-{n}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        results[n] = {}
        for step in ("prepare", "encode"):
            if step == "encode" and args.encode_limit:
                limit_corpus(run_dir, args.encode_limit)
            r = _run_child(step, run_dir, args, config)
            results[n][step] = r
            print(f"{n:>9,} passages  {step:<8} {json.dumps(r)}", flush=True)
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)

    big, small = sorted(args.sizes, reverse=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print(f"baseline: the {small:,}-passage collection; corpus grows {big / small:.0f}x")
    print(
        f"{'step':<8} {'peak RSS small':>15} {'peak RSS big':>13} {'ratio':>6} {'wall small':>11} "
        f"{'wall big':>9}"
    )
    for step in ("prepare", "encode"):
        s, b = results[small][step], results[big][step]
        ratio = b["peak_rss_mib"] / s["peak_rss_mib"]
        print(
            f"{step:<8} {s['peak_rss_mib']:>11.0f} MiB {b['peak_rss_mib']:>9.0f} MiB "
            f"{ratio:>6.2f} {s['wall_s']:>9.1f} s {b['wall_s']:>7.1f} s"
            + ("" if ratio <= 1.3 else "   (above the 1.3 target)")
        )
    if args.encode_limit:
        e_s, e_b = results[small]["encode"]["encoded"], results[big]["encode"]["encoded"]
        print(f"encoding limited to {args.encode_limit:,} passages: {e_b:,} vs {e_s:,} encoded")
    for n in (small, big):
        rate = results[n]["encode"]["passages_per_s"]
        print(
            f"encode throughput ({n:,}): {rate:.0f} passages/s; "
            f"projected for {big:,}: {big / rate / 60:.0f} min"
        )


if __name__ == "__main__":
    main()
