"""The ``build`` stage: candidate sets of the configured strategy from cached teacher scores.

Reads ``queries/<train split>/``, ``examples/``, ``scores/`` and ``pool/``, and writes
``train/<strategy>/`` (schema TRAIN): one row per (training query, positive), see
``raykd.candidates.assemble``. Ray Data unions the four inputs into one schema, sorts them by
qid (a single shuffle; nothing is collected in the driver), assembles each query in the workers,
and the driver streams the rows, in (qid, positive pid) order, into fixed-size Parquet files
with fixed names, so the same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray
from ray.data.context import ShuffleStrategy

from raykd.candidates.assemble import (
    DIAGNOSTICS,
    POOL_DIAGNOSTICS,
    SRC_EXAMPLE,
    SRC_POOL,
    SRC_QUERY,
    SRC_SCORE,
    assemble_group,
    to_group,
)
from raykd.data.parquet import FixedLayoutWriter
from raykd.data.schemas import TRAIN
from raykd.errors import StageError
from raykd.on_ray.errors import unwrap_ray_error
from raykd.stages.pipeline import StageContext, StageResult

log = logging.getLogger(__name__)

BATCH_ROWS = 4096  # rows per row group
ROWS_PER_FILE = 100_000
# Rows per block the sort shuffles (~0.5 GB of example texts at most). The sort splits each of
# its N input blocks into N parts, and parts under Ray's 100 KB inline limit are held in the
# driver's heap: the reads' ~1 MiB blocks put the whole dataset there, in N^2 objects.
SORT_BLOCK_ROWS = 1 << 20


def _read(ctx: StageContext, rel: str, columns: list[str], src: int) -> ray.data.Dataset:
    if not ctx.run.exists(rel):
        raise StageError(f"build needs {rel}/ in {ctx.run.uri}; run the upstream stages first")
    ds = ray.data.read_parquet(ctx.run.uri_of(rel)).select_columns(columns)
    return ds.map_batches(to_group, fn_args=(src,), batch_format="pyarrow", batch_size=None)


def _contiguous(block: pa.Table) -> pa.Table:
    return block.combine_chunks()


def _mean(total: np.ndarray) -> float:
    """``total`` is [sum, count]."""
    return float(total[0] / total[1]) if total[1] else float("nan")


def run_build(ctx: StageContext) -> StageResult:
    cand = ctx.cfg.candidates
    split = ctx.cfg.data.splits.train
    queries_rel = f"queries/{split}"
    out_rel = f"train/{cand.strategy}"
    start = time.perf_counter()
    ds = _read(ctx, queries_rel, ["qid", "text"], SRC_QUERY).union(
        _read(
            ctx,
            "examples",
            ["qid", "eid", "kind", "pid", "pid2", "mask_ratio", "text"],
            SRC_EXAMPLE,
        ),
        # Ensemble member columns (score_*) are not read.
        _read(ctx, "scores", ["qid", "eid", "kind", "score"], SRC_SCORE),
        _read(ctx, "pool", ["qid", "pid", "rank", "source"], SRC_POOL),
    )
    # SORT_BLOCK_ROWS-row blocks (split and combined, not shuffled), counted from the Parquet
    # footers: a streaming repartition by rows left the reads' small blocks as they were.
    rows = sum(
        pads.dataset(ctx.run.path(rel), filesystem=ctx.run.fs, format="parquet").count_rows()
        for rel in (queries_rel, "examples", "scores", "pool")
    )
    ds = ds.repartition(max(1, -(-rows // SORT_BLOCK_ROWS)))
    # Sort-based grouping runs as plain tasks (the default hash shuffle reserves CPUs for its
    # aggregator actors, which starved the reads on a 2-CPU cluster), and it hands the groups
    # over in qid order, so with preserve_order the output needs no second sort.
    ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ds.context.execution_options.preserve_order = True
    assembled = (
        ds.groupby("qid")
        .map_groups(
            assemble_group,
            batch_format="pyarrow",
            fn_kwargs={
                "candidates": cand,
                # C(q) and the entropies at the temperature the student is distilled at.
                "teacher_temperature": ctx.cfg.train.teacher_temperature,
                "examples_path": ctx.run.uri_of("examples"),
                "scores_path": ctx.run.uri_of("scores"),
            },
        )
        # Each query's rows leave map_groups as chunks of their own: a block held an Arrow
        # array per query and column, and the driver deserialised them all (2.3 s and ~200 MiB
        # at 1% of MS MARCO, growing with the queries). One chunk per column, in the task.
        .map_batches(_contiguous, batch_format="pyarrow", batch_size=None)
    )

    counts = {"rows": 0, "queries": 0, "short_rows": 0, "short_queries": 0, "skipped_queries": 0}
    # Running [sum, count]s: a column kept per batch grows with the rows and, when zero-copy,
    # pins its block's object-store buffer to the end.
    diag = {n: np.zeros(2) for n in DIAGNOSTICS + POOL_DIAGNOSTICS}
    n_set = np.zeros(2)
    last_key: tuple[str, str] | None = None
    last_qid = last_short_qid = None
    writer = FixedLayoutWriter(
        ctx.run.fs, ctx.staging.path(out_rel), TRAIN, BATCH_ROWS, ROWS_PER_FILE
    )
    try:
        with unwrap_ray_error():
            for batch in assembled.iter_batches(batch_size=BATCH_ROWS, batch_format="pyarrow"):
                skipped = batch.column("skipped").to_numpy(zero_copy_only=False)
                counts["skipped_queries"] += int(skipped.sum())
                batch = batch.filter(pa.array(~skipped))
                if not batch.num_rows:
                    continue
                qids = batch.column("qid").to_pylist()
                pids = batch.column("pos_pid").to_pylist()
                if last_key is not None and (qids[0], pids[0]) <= last_key:
                    raise StageError("build: assembled rows arrived out of order")
                last_key = (qids[-1], pids[-1])
                short = batch.column("short").to_numpy(zero_copy_only=False)
                counts["short_rows"] += int(short.sum())
                # Rows arrive sorted by qid, so a query's rows are adjacent.
                for qid, s in zip(qids, short, strict=True):
                    counts["queries"] += qid != last_qid
                    counts["short_queries"] += bool(s) and qid != last_short_qid
                    last_qid = qid
                    last_short_qid = qid if s else last_short_qid
                for name in diag:
                    diag[name] += (pc.sum(batch.column(name)).as_py(), batch.num_rows)
                n_set += (
                    pc.sum(pc.list_value_length(batch.column("teacher"))).as_py(),
                    batch.num_rows,
                )
                writer.write(batch.replace_schema_metadata(None))
    finally:
        counts["rows"] = writer.close()
    if counts["rows"] == 0:
        raise StageError(f"build: no training query of split {split!r} has examples")
    wall = time.perf_counter() - start
    log.info(
        "build %s: %d rows for %d queries in %.1f s (%.0f rows/s)",
        cand.strategy,
        counts["rows"],
        counts["queries"],
        wall,
        counts["rows"] / wall,
    )
    if counts["short_rows"]:
        log.warning(
            "build: %d queries (%d rows) had fewer candidates than asked (on_short=fill)",
            counts["short_queries"],
            counts["short_rows"],
        )
    chosen = {k.removeprefix("set_"): _mean(diag[k]) for k in DIAGNOSTICS}
    chosen["n"] = _mean(n_set)
    pool = {k.removeprefix("pool_"): _mean(diag[k]) for k in POOL_DIAGNOSTICS}
    return StageResult(
        rows={out_rel: counts["rows"]},
        count=(counts["rows"], "candidate sets"),
        info={
            "strategy": cand.strategy,
            **counts,
            "files": writer.files,
            "build_s": round(wall, 3),
            # Means over rows; "chosen" = positive + candidates, "pool" = positive + all
            # original negatives (before any margin filter).
            "diagnostics": {cand.strategy: {"chosen": chosen, "pool": pool}},
        },
    )
