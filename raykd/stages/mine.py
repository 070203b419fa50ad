"""The ``mine`` stage: candidate pools for the training queries -> ``pool/`` (schema POOL).

Each source in ``mining.sources`` yields a ranked list per training query; the lists are merged
in source order (a pid keeps its first source's rank and score) and the qrels positives are
removed, so a positive never appears as a negative downstream. The pool is written in qid
order, one row group per chunk of queries, which ``augment`` reads a chunk at a time.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from raykd.console import progress
from raykd.data.schemas import POOL
from raykd.mining.pool_merge import merge_pools, pool_sizes, ranked_table
from raykd.on_ray.errors import unwrap_ray_error
from raykd.run_dir import RunDir
from raykd.stages.pipeline import StageContext, StageResult

log = logging.getLogger(__name__)

# Queries merged and written at once: 4,096 x a 200-row pool is ~0.8M rows in the driver.
QUERY_CHUNK = 4096


def read_table(run: RunDir, rel: str, columns: list[str] | None = None) -> pa.Table:
    return pads.dataset(run.path(rel), filesystem=run.fs, format="parquet").to_table(columns)


def train_queries(run: RunDir, split: str, columns=("qid", "text")) -> pa.Table:
    """The split's queries in qid order, kept in Arrow; the driver makes Python strings of one
    chunk at a time. For 50,294 synthetic queries: 2.4 MiB, against 9.3 MiB as Python lists
    with their sort order (tracemalloc)."""
    return read_table(run, f"queries/{split}", list(columns)).sort_by("qid")


def train_qids(run: RunDir, split: str) -> list[str]:
    """The split's query ids alone (no texts), in qid order."""
    return train_queries(run, split, ("qid",)).column("qid").to_pylist()


def positive_judgements(run: RunDir, split: str) -> pa.Table:
    """The split's positive (rel > 0) judgements (qid, pid, rel), kept in Arrow: for 533k
    synthetic judgements (MS MARCO's count), 12.6 MiB against 137 MiB as a dict per query
    (tracemalloc). ``positives_of`` reads a chunk's."""
    t = read_table(run, f"qrels/{split}", ["qid", "pid", "rel"])
    return t.filter(pc.greater(t.column("rel"), 0))


def positives_of(judged: pa.Table, qids: list[str] | None = None) -> dict[str, dict[str, int]]:
    """``{qid: {pid: rel}}`` of ``judged`` for ``qids`` (all by default)."""
    if qids is not None:
        wanted = pa.array(qids, pa.string())
        judged = judged.filter(pc.is_in(judged.column("qid"), value_set=wanted))
    out: dict[str, dict[str, int]] = {}
    cols = (judged.column(c).to_pylist() for c in ("qid", "pid", "rel"))
    for q, p, r in zip(*cols, strict=True):
        out.setdefault(q, {})[p] = r
    return out


def corpus_pids(run: RunDir) -> pa.Array:
    """The corpus' pid column alone (no texts)."""
    col = read_table(run, "corpus", ["pid"]).column("pid")
    return col.combine_chunks()


def _sources(ctx: StageContext, queries: pa.Table, info: dict) -> dict:
    """Per source in ``mining.sources``, a function from a chunk of (qids, texts) to its pool
    rows. BM25 indexes once; dense retrieval and a file pool are whole runs over ``queries``,
    kept and sliced. Each source's set-up seconds go to ``info["<source>_wall_s"]``."""
    cfg, m = ctx.cfg, ctx.cfg.mining
    pids_needed = "random" in m.sources or "file" in m.sources
    all_pids = corpus_pids(ctx.run) if pids_needed else None
    out = {}
    for source in m.sources:
        start = time.perf_counter()
        if source == "bm25":
            from raykd.mining.bm25 import BM25Retriever

            retriever = BM25Retriever.for_run(ctx.run, m.bm25)

            def bm25(q, t, retriever=retriever):
                return ranked_table(q, *retriever.retrieve(t, m.depth), "bm25")

            out[source] = bm25
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
                    queries.column("qid").to_pylist(),
                    queries.column("text").to_pylist(),
                    DenseModel.from_encoder(m.dense),
                    depth=m.depth,
                    index=m.index,
                    actors=m.actors,
                    key="mining.actors",
                )
            out[source] = lambda q, t, run=run: dense_pool(run, q)
        elif source == "random":
            from raykd.mining.random_pool import random_pool

            out[source] = lambda q, t: random_pool(q, all_pids, m.n_random, m.seed)
        else:
            from raykd.mining.file_pool import read_file_pool

            if not m.file_path:
                raise ValueError("mining.sources has 'file' but mining.file_path is not set")
            table, skipped = read_file_pool(
                m.file_path,
                m.file_format,
                set(queries.column("qid").to_pylist()),
                all_pids,
                subset=cfg.data.max_train_queries is not None,
            )
            info["file_queries_skipped"] = skipped

            def from_file(q, t, table=table):
                return table.filter(pc.is_in(table.column("qid"), value_set=pa.array(q)))

            out[source] = from_file
        info[f"{source}_wall_s"] = time.perf_counter() - start  # set-up; chunks add theirs
    return out


def run_mine(ctx: StageContext) -> StageResult:
    """Pools per chunk of ``QUERY_CHUNK`` queries in qid order, each merged and appended to
    one Parquet file, so the driver holds one chunk's pool rows, never the whole pool."""
    m = ctx.cfg.mining
    split = ctx.cfg.data.splits.train
    queries = train_queries(ctx.run, split)
    n = queries.num_rows
    judged = positive_judgements(ctx.run, split)
    info: dict = {"queries": n, "sources": list(m.sources)}
    sources = _sources(ctx, queries, info)
    totals = {f"{s}_rows": 0 for s in m.sources} | {"dropped_positives": 0, "dropped_duplicates": 0}
    ctx.run.fs.create_dir(ctx.staging.path("pool"), recursive=True)
    rows = empty = 0
    first_empty = None
    with (
        pq.ParquetWriter(ctx.staging.path("pool/part-0.parquet"), POOL, filesystem=ctx.run.fs) as w,
        progress("mine", n, "queries") as bar,
    ):
        for i in range(0, n, QUERY_CHUNK):
            part = queries.slice(i, QUERY_CHUNK)
            q, t = part.column("qid").to_pylist(), part.column("text").to_pylist()
            pools = []
            for source, pool_of in sources.items():
                start = time.perf_counter()
                pools.append(pool_of(q, t))
                totals[f"{source}_rows"] += pools[-1].num_rows
                info[f"{source}_wall_s"] += time.perf_counter() - start
            positives = positives_of(judged, q)
            pool, dropped = merge_pools(pools, {x: set(positives.get(x, ())) for x in q})
            for k, v in dropped.items():
                totals[k] += v
            missing = [x for x, n in pool_sizes(pool, q).items() if n == 0]
            empty += len(missing)
            first_empty = first_empty or min(missing, default=None)
            w.write_table(pool)
            rows += pool.num_rows
            bar.update(len(q))
    info.update(totals)
    info.update({f"{s}_wall_s": round(info[f"{s}_wall_s"], 3) for s in m.sources})
    info["empty_pools"] = empty
    if empty:
        log.warning("mine: %d training queries have an empty pool (e.g. %s)", empty, first_empty)
    log.info("mine: %d pool rows for %d queries", rows, n)
    return StageResult(rows={"pool": rows}, info=info, count=(n, "queries"))
