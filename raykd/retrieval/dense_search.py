"""Dense retrieval for evaluation: corpus-embedding shards -> FAISS index -> top-k per query.

The corpus is encoded on Ray Data (``encode_job.encode_corpus``) into Parquet shards; the driver
adds them to the index one shard at a time (the corpus is never held twice), encodes the (few)
eval queries itself and searches to the eval depth, clipped to the corpus size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from raykd.data.trec import Run, run_from_arrays
from raykd.retrieval.encode_job import encode_corpus, iter_embedding_shards
from raykd.retrieval.index import IndexSpec, build_index, search

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DenseModel:
    """A bi-encoder as evaluated: the passage model, the query model if separate, lengths."""

    model: str
    pooling: str = "mean"
    normalize: bool = True
    query_max_length: int = 32
    passage_max_length: int = 128
    query_model: str | None = None  # None: shared towers

    @property
    def query_tower(self) -> str:
        return self.query_model or self.model


def with_available_gpu(spec: IndexSpec) -> IndexSpec:
    """The spec on GPU when this FAISS build sees one (faiss-gpu on a GPU node)."""
    if spec.use_gpu or faiss.get_num_gpus() == 0:
        return spec
    return spec.model_copy(update={"use_gpu": True})


def search_embeddings(
    embeddings_uri: str,
    qids: Sequence[str],
    query_vecs: np.ndarray,
    depth: int,
    spec: IndexSpec | None = None,
) -> Run:
    """Index the embedding shards under ``embeddings_uri`` and return each query's top ``depth``.

    ``query_vecs`` is float32 ``[len(qids), dim]``; scores are inner products.
    """
    spec = with_available_gpu(spec or IndexSpec())
    query_vecs = np.asarray(query_vecs, dtype=np.float32)
    if query_vecs.ndim != 2 or len(query_vecs) != len(qids):
        raise ValueError(f"query_vecs {query_vecs.shape} must be (len(qids)={len(qids)}, dim)")
    pids: list[str] = []

    def shards() -> Iterator[np.ndarray]:
        for shard_pids, vecs in iter_embedding_shards(embeddings_uri):
            pids.extend(shard_pids)
            yield vecs

    start = time.perf_counter()
    index = build_index(shards(), query_vecs.shape[1], spec)
    if index.ntotal == 0:
        raise ValueError(f"{embeddings_uri}: no embeddings to search")
    scores, rows = search(index, query_vecs, depth)
    run = run_from_arrays(list(qids), rows, scores, pids)
    log.info(
        "dense search: %d queries over %d passages (%s, depth %d) in %.1f s",
        len(qids),
        index.ntotal,
        spec.factory_string(),
        min(depth, index.ntotal),
        time.perf_counter() - start,
    )
    return run


def encode_queries(
    model: DenseModel, texts: Sequence[str], batch_size: int = 256, dtype: str = "fp32"
) -> np.ndarray:
    """Query vectors in the driver (eval query sets are small next to the corpus)."""
    from raykd.retrieval.encoder import TextEncoder

    encoder = TextEncoder(
        model.query_tower,
        pooling=model.pooling,
        normalize=model.normalize,
        max_length=model.query_max_length,
        dtype=dtype,
    )
    return encoder.encode(list(texts), batch_size=batch_size)


def dense_retrieve(
    corpus_uri: str,
    embeddings_uri: str,
    qids: Sequence[str],
    texts: Sequence[str],
    model: DenseModel,
    *,
    depth: int,
    spec: IndexSpec | None = None,
    batch_size: int = 256,
    use_gpu: bool = False,
    dtype: str = "fp32",
    min_actors: int = 1,
    max_actors: int = 1,
    torch_threads: int | None = None,
) -> Run:
    """Encode the corpus into ``embeddings_uri`` (a fresh folder), then search the queries."""
    encode_corpus(
        corpus_uri,
        embeddings_uri,
        model=model.model,
        pooling=model.pooling,
        normalize=model.normalize,
        max_length=model.passage_max_length,
        batch_size=batch_size,
        use_gpu=use_gpu,
        dtype=dtype,
        min_actors=min_actors,
        max_actors=max_actors,
        torch_threads=torch_threads,
    )
    query_vecs = encode_queries(model, texts, batch_size, dtype)
    return search_embeddings(embeddings_uri, qids, query_vecs, depth, spec)
