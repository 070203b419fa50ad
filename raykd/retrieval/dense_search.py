"""Dense retrieval: corpus-embedding shards -> FAISS index -> top-k per query.

The corpus is encoded into Parquet shards (``raykd.on_ray.encoding`` runs
``raykd.retrieval.embeddings.EncodeBatch`` on Ray Data); ``search_embeddings`` adds them to the
index one shard at a time (the corpus is never held twice) and searches the query vectors, which
``encode_queries`` computes in the calling process (query sets are small next to the corpus).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from raykd.config import EncoderSpec, IndexSpec
from raykd.data.trec import Run, run_from_arrays
from raykd.retrieval.embeddings import iter_embedding_shards
from raykd.retrieval.index import build_index, search

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

    @classmethod
    def from_encoder(cls, spec: EncoderSpec) -> DenseModel:
        """One tower with ``spec.max_length`` tokens on both sides (the mine stage's encoder)."""
        if not spec.model:
            raise ValueError("the encoder has no model")
        return cls(
            spec.model,
            pooling=spec.pooling,
            normalize=spec.normalize,
            query_max_length=spec.max_length,
            passage_max_length=spec.max_length,
        )


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
