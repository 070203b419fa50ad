"""Uniform random negatives: ``n`` distinct corpus passages per query, seeded per query."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from raykd.data.schemas import POOL


def query_rng(seed: int, qid: str) -> np.random.Generator:
    """A generator keyed by (seed, qid): a query's sample does not depend on the other queries."""
    key = f"{seed}|{qid}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def random_pool(qids: list[str], corpus_pids: pa.Array, n: int, seed: int) -> pa.Table:
    """``min(n, corpus size)`` passages per query drawn without replacement; score 0, rank 1..n.

    Needs only the corpus' pid column, never its texts.
    """
    n = min(n, len(corpus_pids))
    rows = np.concatenate(
        [query_rng(seed, q).choice(len(corpus_pids), size=n, replace=False) for q in qids]
        or [np.zeros(0, dtype=np.int64)]
    )
    return pa.table(
        [
            pa.array(np.repeat(np.asarray(qids, dtype=object), n), type=pa.string()),
            corpus_pids.take(pa.array(rows, type=pa.int64())),
            pa.array(np.tile(np.arange(1, n + 1, dtype=np.int32), len(qids))),
            pa.array(np.zeros(n * len(qids), dtype=np.float32)),
            pa.array(["random"] * (n * len(qids)), type=pa.string()),
        ],
        schema=POOL,
    )
