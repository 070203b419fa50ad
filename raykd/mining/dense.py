"""Dense pools: encode the corpus on Ray Data, index it with FAISS, search the training queries."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from raykd.config import MiningSection
from raykd.mining.pool_merge import ranked_table
from raykd.retrieval.encode_job import encode_corpus, iter_embedding_shards
from raykd.retrieval.encoder import TextEncoder
from raykd.retrieval.index import build_index, search

log = logging.getLogger("raykd")


def dense_pool(
    corpus_uri: str, embeddings_uri: str, qids: list[str], texts: list[str], m: MiningSection
) -> pa.Table:
    """Top-``m.depth`` passages per query by inner product with ``m.dense_model``.

    The corpus embeddings go to ``embeddings_uri`` (a fresh scratch folder); the driver holds
    the FAISS index, added shard by shard, and encodes the (few) queries itself.
    """
    if not m.dense_model:
        raise ValueError("mining.sources has 'dense' but mining.dense_model is not set")
    encode_corpus(
        corpus_uri,
        embeddings_uri,
        model=m.dense_model,
        pooling=m.dense_pooling,
        normalize=m.dense_normalize,
        max_length=m.dense_max_length,
        batch_size=m.batch_size,
        use_gpu=m.use_gpu,
        min_actors=m.min_actors,
        max_actors=m.max_actors,
    )
    encoder = TextEncoder(
        m.dense_model,
        pooling=m.dense_pooling,
        normalize=m.dense_normalize,
        max_length=m.dense_max_length,
    )
    start = time.perf_counter()
    queries = encoder.encode(texts, batch_size=m.batch_size)
    pids: list[str] = []

    def shards() -> Iterator[np.ndarray]:
        for shard_pids, vecs in iter_embedding_shards(embeddings_uri):
            pids.extend(shard_pids)
            yield vecs

    index = build_index(shards(), encoder.dim, m.index)
    scores, rows = search(index, queries, m.depth)
    lookup = np.asarray(pids, dtype=object)
    ranked = [lookup[r[r >= 0]].tolist() for r in rows]
    log.info(
        "dense: searched %d queries over %d passages in %.1f s",
        len(qids),
        len(pids),
        time.perf_counter() - start,
    )
    return ranked_table(qids, ranked, scores, "dense")
