"""Dense pools: the training queries' top ``depth`` by a bi-encoder over the whole corpus."""

from __future__ import annotations

import pyarrow as pa

from raykd.config import MiningSection
from raykd.data.trec import Run
from raykd.mining.pool_merge import ranked_table
from raykd.retrieval.dense_search import DenseModel, dense_retrieve


def dense_pool(
    corpus_uri: str, embeddings_uri: str, qids: list[str], texts: list[str], m: MiningSection
) -> pa.Table:
    """Top-``m.depth`` passages per query by inner product with ``m.dense_model``.

    The corpus is encoded on Ray Data into ``embeddings_uri`` (a fresh scratch folder) and
    searched with FAISS, added shard by shard (``raykd.retrieval.dense_search``).
    """
    if not m.dense_model:
        raise ValueError("mining.sources has 'dense' but mining.dense_model is not set")
    run = dense_run(corpus_uri, embeddings_uri, qids, texts, m, m.depth)
    # The run keeps FAISS's order within a query; a stable sort keeps it among equal scores.
    ranked = [sorted(run.get(q, {}).items(), key=lambda kv: -kv[1]) for q in qids]
    return ranked_table(
        qids, [[p for p, _ in r] for r in ranked], [[s for _, s in r] for r in ranked], "dense"
    )


def dense_run(
    corpus_uri: str,
    embeddings_uri: str,
    qids: list[str],
    texts: list[str],
    m: MiningSection,
    depth: int,
) -> Run:
    """Top-``depth`` by ``m.dense_model`` with the mining settings, as a run (eval reranks it)."""
    model = DenseModel(
        m.dense_model,
        pooling=m.dense_pooling,
        normalize=m.dense_normalize,
        query_max_length=m.dense_max_length,
        passage_max_length=m.dense_max_length,
    )
    return dense_retrieve(
        corpus_uri,
        embeddings_uri,
        qids,
        texts,
        model,
        depth=depth,
        spec=m.index,
        batch_size=m.batch_size,
        use_gpu=m.use_gpu,
        min_actors=m.min_actors,
        max_actors=m.max_actors,
        torch_threads=m.torch_threads,
    )
