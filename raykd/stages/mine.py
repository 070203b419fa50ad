"""The ``mine`` stage: candidate pools for the training queries -> ``pool/`` (schema POOL).

Each source in ``mining.sources`` yields a ranked list per training query; the lists are merged
in source order (a pid keeps its first source's rank and score) and the qrels positives are
removed, so a positive never appears as a negative downstream.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from raykd.mining.pool_merge import merge_pools, pool_sizes, ranked_table
from raykd.on_ray.errors import unwrap_ray_error
from raykd.run_dir import RunDir
from raykd.stages.pipeline import StageContext, StageResult

log = logging.getLogger(__name__)

_QUERY_CHUNK = 1024


def read_table(run: RunDir, rel: str, columns: list[str] | None = None) -> pa.Table:
    return pads.dataset(run.path(rel), filesystem=run.fs, format="parquet").to_table(columns)


def train_queries(run: RunDir, split: str) -> tuple[list[str], list[str]]:
    t = read_table(run, f"queries/{split}", ["qid", "text"])
    return t.column("qid").to_pylist(), t.column("text").to_pylist()


def train_positives(run: RunDir, split: str) -> dict[str, dict[str, int]]:
    """``{qid: {pid: rel}}`` of the split's positive (rel > 0) judgements."""
    t = read_table(run, f"qrels/{split}", ["qid", "pid", "rel"])
    out: dict[str, dict[str, int]] = {}
    for q, p, r in zip(*(t.column(c).to_pylist() for c in ("qid", "pid", "rel")), strict=True):
        if r > 0:
            out.setdefault(q, {})[p] = r
    return out


def corpus_pids(run: RunDir) -> pa.Array:
    """The corpus' pid column alone (no texts)."""
    col = read_table(run, "corpus", ["pid"]).column("pid")
    return col.combine_chunks()


def _bm25(ctx: StageContext, qids: list[str], texts: list[str]) -> pa.Table:
    from raykd.mining.bm25 import BM25Retriever

    m = ctx.cfg.mining
    retriever = BM25Retriever.for_run(ctx.run, m.bm25)
    pids: list[list[str]] = []
    scores = []
    start = time.perf_counter()
    for i in range(0, len(qids), _QUERY_CHUNK):
        p, s = retriever.retrieve(texts[i : i + _QUERY_CHUNK], m.depth)
        pids.extend(p)
        scores.extend(s)
        done = min(i + _QUERY_CHUNK, len(qids))
        log.info(
            "bm25: %d/%d queries (%.0f q/s)",
            done,
            len(qids),
            done / max(time.perf_counter() - start, 1e-9),
        )
    return ranked_table(qids, pids, scores, "bm25")


def run_mine(ctx: StageContext) -> StageResult:
    cfg, m = ctx.cfg, ctx.cfg.mining
    split = cfg.data.splits.train
    qids, texts = train_queries(ctx.run, split)
    positives = train_positives(ctx.run, split)
    pids_needed = "random" in m.sources or "file" in m.sources
    all_pids = corpus_pids(ctx.run) if pids_needed else None
    info: dict = {"queries": len(qids), "sources": list(m.sources)}
    pools: list[pa.Table] = []
    for source in m.sources:
        start = time.perf_counter()
        if source == "bm25":
            table = _bm25(ctx, qids, texts)
        elif source == "dense":
            from raykd.mining.dense import dense_pool
            from raykd.on_ray.encoding import dense_retrieve
            from raykd.retrieval.dense_search import DenseModel

            if not m.dense.model:
                raise ValueError("mining.sources has 'dense' but mining.dense.model is not set")
            with unwrap_ray_error():
                run = dense_retrieve(
                    ctx.run.uri_of("corpus"),
                    ctx.staging.uri("_embeddings"),
                    qids,
                    texts,
                    DenseModel.from_encoder(m.dense),
                    depth=m.depth,
                    index=m.index,
                    actors=m.actors,
                    key="mining.actors",
                )
            table = dense_pool(run, qids)
        elif source == "random":
            from raykd.mining.random_pool import random_pool

            table = random_pool(qids, all_pids, m.n_random, m.seed)
        else:
            from raykd.mining.file_pool import read_file_pool

            if not m.file_path:
                raise ValueError("mining.sources has 'file' but mining.file_path is not set")
            table, skipped = read_file_pool(
                m.file_path,
                m.file_format,
                set(qids),
                all_pids,
                subset=cfg.data.max_train_queries is not None,
            )
            info["file_queries_skipped"] = skipped
        info[f"{source}_rows"] = table.num_rows
        info[f"{source}_wall_s"] = round(time.perf_counter() - start, 3)
        pools.append(table)
    pool, dropped = merge_pools(pools, {q: set(d) for q, d in positives.items()})
    info.update(dropped)
    sizes = pool_sizes(pool, qids)
    empty = sorted(q for q, n in sizes.items() if n == 0)
    info["empty_pools"] = len(empty)
    if empty:
        log.warning("mine: %d training queries have an empty pool (e.g. %s)", len(empty), empty[0])
    out = ctx.staging.path("pool/part-0.parquet")
    ctx.run.fs.create_dir(ctx.staging.path("pool"), recursive=True)
    pq.write_table(pool, out, filesystem=ctx.run.fs)
    log.info("mine: %d pool rows for %d queries", pool.num_rows, len(qids))
    return StageResult(rows={"pool": pool.num_rows}, info=info, count=(len(qids), "queries"))
