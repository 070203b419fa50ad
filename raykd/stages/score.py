"""The ``score`` stage: teacher scores for every example, resumable shard by shard.

Resumability uses a shard-level skip (not ``ray.data.checkpoint``): the examples are split once
into shards by qid hash under ``<run>/.partial/score/<fingerprint>/input/``. One Ray Data
pipeline scores every pending shard, in shard order, so the teacher's actor pool starts once
(not once per shard: at MS MARCO's 590 shards of 100k pairs, the start-ups alone would take
hours); each shard is written atomically to ``.../out/shard-<k, 5 digits>.parquet`` as soon as its
rows are complete. An ensemble runs that pipeline once per member and keeps each member's shard
files (``out/member-I/``) until every member has scored the shard. A re-run after an
interruption finds the same fingerprint, skips what was written and scores only the rest. When
every shard is present they are copied into staging as ``scores/`` and the partial folder is
removed.
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
from raykd.on_ray.scoring import require_teacher_fits, score_by_shard
from raykd.run_dir import RunDir
from raykd.stages.pipeline import StageContext, StageResult
from raykd.teacher.base import TeacherEnv, build_teacher
from raykd.teacher.ensemble import EnsembleTeacher
from raykd.teacher.rows import ShardCollector, add_shard, attach_queries, check_scores

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


def shard_rel(partial: str, k: int) -> str:
    return f"{partial}/out/shard-{k:05d}.parquet"


def member_rel(partial: str, member: int, k: int) -> str:
    """An ensemble member's scores of shard ``k``, kept until every member has scored it."""
    return f"{partial}/out/member-{member}/shard-{k:05d}.parquet"


def pending_rows(ctx: StageContext, partial: str, shards: list[int]):
    """The examples of ``shards``, shard after shard, with their query texts."""
    import ray.data

    run = ctx.run
    queries = read_queries(run, ctx.cfg.data.splits.train)
    paths = [run.uri_of(f"{partial}/input/shard={k}") for k in shards]
    return ray.data.read_parquet(paths).map_batches(
        attach_queries,
        fn_kwargs={"queries": queries, "source": run.uri_of("examples")},
        batch_size=4096,
    )


def write_atomic(run: RunDir, rel: str, table: pa.Table) -> None:
    """No half-written shard is ever visible: temp file + move locally, one PUT on object stores."""
    target = run.path(rel)
    run.fs.create_dir(posixpath.dirname(target), recursive=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}" if run.is_local else target
    pq.write_table(table, tmp, filesystem=run.fs)
    if tmp != target:
        run.fs.move(tmp, target)


def run_score(ctx: StageContext) -> StageResult:
    cfg, run = ctx.cfg, ctx.run
    trained = run.path("teacher_model") if cfg.teacher.train is not None else None
    teacher = build_teacher(cfg.teacher, TeacherEnv(run=run, job=cfg, trained_model=trained))
    require_teacher_fits(teacher)  # before any partial work is written
    schema = scores_schema(tuple(teacher.columns))

    n_total = count_rows(run, "examples")
    n_shards = max(1, math.ceil(n_total / cfg.teacher.shard_rows))
    partial = partial_dir(ctx.fingerprint)
    if n_total and not run.exists(f"{partial}/input"):
        with unwrap_ray_error():
            split_examples(run, partial, n_shards)
    shards = list_shards(run, f"{partial}/input") if n_total else []

    pending = [k for k in shards if not run.exists(shard_rel(partial, k))]
    expected = {k: count_rows(run, f"{partial}/input/shard={k}") for k in pending}
    scored, skipped = sum(expected.values()), len(shards) - len(pending)
    written = [skipped]
    start = time.perf_counter()

    def write_shard(k: int, table: pa.Table) -> None:
        table = table.select(schema.names).cast(schema)
        check_scores(table, tuple(teacher.columns))
        write_atomic(run, shard_rel(partial, k), table)
        written[0] += 1
        log.info("score: shard %d (%d/%d) %d pairs", k, written[0], len(shards), table.num_rows)

    # An ensemble scores every pending shard with each member in turn (one pool per member),
    # keeps each member's shard files, and combines a shard once every member has scored it.
    specs = [s for _, _, s in teacher.members] if isinstance(teacher, EnsembleTeacher) else []
    unit = "pair scores" if specs else "pairs"
    with progress("score", scored * max(1, len(specs)), unit) as bar, unwrap_ray_error():
        if pending and not specs:
            rows = pending_rows(ctx, partial, pending)
            score_by_shard(teacher, rows, ShardCollector(expected, n_shards), write_shard,
                           bar.update)  # fmt: skip
        elif pending:
            for i, spec in enumerate(specs):  # each member's pool once, over every shard
                todo = [k for k in pending if not run.exists(member_rel(partial, i, k))]
                bar.update(sum(expected[k] for k in pending if k not in todo))
                if todo:
                    score_by_shard(
                        spec,
                        pending_rows(ctx, partial, todo),
                        ShardCollector({k: expected[k] for k in todo}, n_shards),
                        lambda k, t, i=i: write_atomic(run, member_rel(partial, i, k), t),
                        bar.update,
                    )
            for k in pending:
                tables = [pq.read_table(run.path(member_rel(partial, i, k)), filesystem=run.fs)
                          for i in range(len(specs))]  # fmt: skip
                write_shard(k, teacher.combine_tables(tables))
    score_time = time.perf_counter() - start

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
