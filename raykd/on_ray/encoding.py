"""Corpus encoding on Ray Data, and dense retrieval over the encoded corpus.

``encode_corpus`` streams a prepared corpus (Parquet with ``pid``, ``title``, ``text``) through an
autoscaling pool of ``raykd.retrieval.embeddings.EncodeBatch`` actors and writes the embedding
shards to a fresh folder; ``dense_retrieve`` then searches them with FAISS in the driver
(``raykd.retrieval.dense_search``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import ray

from raykd.config import ActorPoolSpec, IndexSpec
from raykd.console import progress
from raykd.data.trec import Run
from raykd.on_ray.capacity import require_pool_fits
from raykd.retrieval.dense_search import DenseModel, encode_queries, search_embeddings
from raykd.retrieval.embeddings import EncodeBatch, count_embeddings, write_embedding_shard

log = logging.getLogger(__name__)

# Forward batches per actor call. The encoder sorts a call's rows by length before batching
# them, as sentence-transformers sorts its whole input; one batch per call would leave it
# nothing to sort (bench/encode_throughput.py measures the difference).
BATCHES_PER_CALL = 8


def timed_calls(actor: EncodeBatch, table, batch_size: int) -> tuple[float, list]:
    """Rows/s of ``actor`` over ``table`` (Arrow, as ``encode_corpus`` reads it), called as
    ``encode_corpus``'s pool calls it (``BATCHES_PER_CALL`` batches of ``batch_size`` a call)
    after a one-batch warm-up, and its outputs in row order: the encoder's steady state, which
    the bench scripts and the plan's checks measure."""
    actor(table.slice(0, batch_size))
    call = batch_size * BATCHES_PER_CALL
    start = time.perf_counter()
    out = [actor(table.slice(i, call)) for i in range(0, table.num_rows, call)]
    return table.num_rows / (time.perf_counter() - start), out


def encode_corpus(
    corpus_uri: str, out_uri: str, model: DenseModel, actors: ActorPoolSpec, *, key: str
) -> int:
    """Encode every passage of ``corpus_uri`` with ``model``'s passage tower into Parquet shards
    under ``out_uri``; returns the number of passages written.

    ``out_uri`` must be a fresh folder (Ray Data appends to existing ones). ``actors.batch_size``
    is the rows per forward pass (``BATCHES_PER_CALL`` of them per actor call); an actor takes
    ``actors.num_gpus`` GPUs, or on CPU one of Ray's CPUs and ``actors.torch_threads`` threads.
    ``key`` is where the config sets ``actors`` ("mining.actors", "eval.actors"), for the error
    when no node can hold an actor.
    """
    require_pool_fits(key, actors)
    start = time.perf_counter()
    ds = ray.data.read_parquet(corpus_uri).select_columns(["pid", "title", "text"])
    total = ds.count()
    ds = ds.map_batches(
        EncodeBatch,
        fn_constructor_kwargs={
            "model": model.model,
            "pooling": model.pooling,
            "normalize": model.normalize,
            "max_length": model.passage_max_length,
            "dtype": actors.dtype,
            "batch_size": actors.batch_size,
            "torch_threads": actors.torch_threads,
        },
        batch_size=actors.batch_size * BATCHES_PER_CALL,
        batch_format="pyarrow",
        # One Ray CPU per CPU actor whatever its threads: reserving them all would starve the
        # streaming reads that feed it on a small node.
        num_gpus=actors.num_gpus or None,
        resources=actors.resources or None,
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors),
    )
    # Each block is written where it was encoded; only its row count comes back, for progress.
    written = ds.map_batches(
        write_embedding_shard,
        fn_kwargs={"out_uri": out_uri},
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=0.25,
    )
    with progress("encode", total, "passages") as bar:
        for counts in written.iter_batches(batch_size=None, batch_format="pyarrow"):
            bar.update(sum(counts.column("rows").to_pylist()))
    n = count_embeddings(out_uri)
    wall = time.perf_counter() - start
    log.info("encoded %d passages in %.1f s (%.1f passages/s)", n, wall, n / max(wall, 1e-9))
    return n


def dense_retrieve(
    corpus_uri: str,
    embeddings_uri: str,
    qids: Sequence[str],
    texts: Sequence[str],
    model: DenseModel,
    *,
    depth: int,
    index: IndexSpec,
    actors: ActorPoolSpec,
    key: str,
) -> Run:
    """Encode the corpus into ``embeddings_uri`` (a fresh folder), then return each query's top
    ``depth`` passages by inner product (``qids`` [n] and their ``texts`` [n]); ``actors`` is
    the config's ``key``."""
    encode_corpus(corpus_uri, embeddings_uri, model, actors, key=key)
    query_vecs = encode_queries(model, texts, actors.batch_size, actors.dtype)
    return search_embeddings(embeddings_uri, qids, query_vecs, depth, index)
