"""The ``score`` stage: teacher scores for every example, resumable shard by shard.

Resumability uses a shard-level skip (not ``ray.data.checkpoint``): the examples are split once
into shards by qid hash under ``<run>/.partial/score/<fingerprint>/input/``; each shard is scored
and written atomically to ``.../out/shard-XXXXX.parquet``. A re-run after an interruption finds
the same fingerprint, skips the shards already written and scores only the rest. When every shard
is present they are copied into staging as ``scores/`` and the partial folder is removed.
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raykd.console import progress
from raykd.data import acero
from raykd.data.schemas import SCORES
from raykd.errors import StageError
from raykd.on_ray.errors import unwrap_ray_error
from raykd.on_ray.scoring import collect, require_teacher_fits, score_dataset
from raykd.run_dir import RunDir
from raykd.stages.pipeline import StageContext, StageResult
from raykd.teacher.base import TeacherEnv, build_teacher
from raykd.teacher.rows import add_shard, attach_queries, check_scores

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = ["qid", "eid", "kind", "text"]


def scores_schema(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema([*SCORES, *(pa.field(f"score_{c}", pa.float32()) for c in columns)])


PARTIAL_ROOT = ".partial/score"


def partial_dir(fingerprint: str) -> str:
    return f"{PARTIAL_ROOT}/{fingerprint}"


def read_queries(run: RunDir, split: str) -> dict[str, str]:
    rel = f"queries/{split}"
    table = pq.read_table(run.path(rel), filesystem=run.fs, columns=["qid", "text"])
    return dict(zip(table["qid"].to_pylist(), table["text"].to_pylist(), strict=True))


def count_rows(run: RunDir, rel: str) -> int:
    import pyarrow.dataset as pads

    return acero.count_rows(pads.dataset(run.path(rel), filesystem=run.fs, format="parquet"))


def split_examples(run: RunDir, partial: str, n_shards: int) -> None:
    """Write the examples once, partitioned by qid hash (hive folders ``shard=K``), atomically."""
    import ray.data

    final = f"{partial}/input"
    tmp = f"{partial}/input-{uuid.uuid4().hex[:8]}"
    ray.data.read_parquet(run.uri_of("examples")).select_columns(EXAMPLE_COLUMNS).map_batches(
        add_shard, fn_kwargs={"n_shards": n_shards}, batch_size=4096
    ).write_parquet(run.uri_of(tmp), partition_cols=["shard"])
    run.commit(tmp, final)


def list_shards(run: RunDir, rel: str) -> list[int]:
    infos = run.fs.get_file_info(pafs.FileSelector(run.path(rel)))
    names = [posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory]
    return sorted(int(n.split("=", 1)[1]) for n in names if n.startswith("shard="))


def write_atomic(run: RunDir, rel: str, table: pa.Table) -> None:
    """No half-written shard is ever visible: temp file + move locally, one PUT on object stores."""
    target = run.path(rel)
    run.fs.create_dir(posixpath.dirname(target), recursive=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}" if run.is_local else target
    pq.write_table(table, tmp, filesystem=run.fs)
    if tmp != target:
        run.fs.move(tmp, target)


def run_score(ctx: StageContext) -> StageResult:
    import ray.data

    cfg, run = ctx.cfg, ctx.run
    trained = run.path("teacher_model") if cfg.teacher.train is not None else None
    teacher = build_teacher(cfg.teacher, TeacherEnv(run=run, job=cfg, trained_model=trained))
    require_teacher_fits(teacher)  # before any partial work is written
    schema = scores_schema(tuple(teacher.columns))
    queries = read_queries(run, cfg.data.splits.train)
    source = run.uri_of("examples")

    n_total = count_rows(run, "examples")
    n_shards = max(1, math.ceil(n_total / cfg.teacher.shard_rows))
    partial = partial_dir(ctx.fingerprint)
    if n_total and not run.exists(f"{partial}/input"):
        with unwrap_ray_error():
            split_examples(run, partial, n_shards)
    shards = list_shards(run, f"{partial}/input") if n_total else []

    scored = skipped = 0
    score_time = 0.0
    with progress("score", n_total, "pairs") as bar:
        for i, k in enumerate(shards):
            out_rel = f"{partial}/out/shard-{k:05d}.parquet"
            if run.exists(out_rel):
                skipped += 1
                continue
            start = time.perf_counter()
            with unwrap_ray_error():
                ds = (
                    ray.data.read_parquet(run.uri_of(f"{partial}/input/shard={k}"))
                    .map_batches(
                        attach_queries,
                        fn_kwargs={"queries": queries, "source": source},
                        batch_size=4096,
                    )
                    .materialize()
                )
                n_in = ds.count()
                table = collect(score_dataset(teacher, ds), schema, bar.update)
            if table.num_rows != n_in:
                raise StageError(f"shard {k}: teacher returned {table.num_rows} rows for {n_in}")
            check_scores(table, tuple(teacher.columns))
            write_atomic(run, out_rel, table)
            score_time += time.perf_counter() - start
            scored += n_in
            log.info(
                "score: shard %d (%d/%d) %d pairs, %.1f pairs/s so far",
                k,
                i + 1,
                len(shards),
                n_in,
                scored / score_time,
            )

    n_out = assemble(ctx, partial, shards, schema)
    if n_out != n_total:
        raise StageError(f"scores hold {n_out} rows for {n_total} examples")
    # Partial work of other fingerprints (an interrupted run whose config then changed) goes too.
    run.delete(PARTIAL_ROOT)
    run.prune(PARTIAL_ROOT)  # and .partial/ itself when nothing else is resuming there
    pairs_per_s = scored / score_time if score_time else None
    if pairs_per_s is not None:
        log.info("score: %d pairs in %.1f s (%.1f pairs/s)", scored, score_time, pairs_per_s)
    return StageResult(
        rows={"scores": n_out},
        count=(scored, "pairs"),
        info={
            "pairs_scored": scored,
            "shards": len(shards),
            "shards_resumed": skipped,
            "score_seconds": round(score_time, 3),
            "pairs_per_s": round(pairs_per_s, 2) if pairs_per_s else None,
            "teacher_kind": cfg.teacher.kind,
            "teacher_model": trained or cfg.teacher.model,
        },
    )


def assemble(ctx: StageContext, partial: str, shards: list[int], schema: pa.Schema) -> int:
    """Copy the shard files into ``scores/`` in staging; returns the row count."""
    run = ctx.run
    dest = ctx.staging.path("scores")
    run.fs.create_dir(dest, recursive=True)
    if not shards:
        pq.write_table(schema.empty_table(), f"{dest}/part-00000.parquet", filesystem=run.fs)
        return 0
    total = 0
    for k in shards:
        src = run.path(f"{partial}/out/shard-{k:05d}.parquet")
        total += pq.read_metadata(src, filesystem=run.fs).num_rows
        pafs.copy_files(
            src,
            f"{dest}/part-{k:05d}.parquet",
            source_filesystem=run.fs,
            destination_filesystem=run.fs,
        )
    return total
