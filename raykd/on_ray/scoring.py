"""Teachers on Ray Data: a ScorerSpec as CPU pre-stage tasks and an autoscaling actor pool, an
ensemble as its members in turn, and the rerank of a first-stage run by the teacher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray
import ray.data

from raykd.data.trec import Run
from raykd.errors import StageError
from raykd.evaluation.rerank import pair_groups
from raykd.on_ray.capacity import require_pool_fits
from raykd.on_ray.errors import unwrap_ray_error
from raykd.teacher.base import ScorerSpec, TeacherEnv, build_teacher
from raykd.teacher.rows import ShardCollector, check_scores

if TYPE_CHECKING:
    from raykd.config import JobConfig
    from raykd.run_dir import RunDir
    from raykd.teacher.base import Teacher

log = logging.getLogger(__name__)

BATCHES_PER_BLOCK = 4


class _WithShared:
    """An actor of ``cls`` built with its shared kwargs fetched from the object store (the refs
    travel inside lists so that Ray hands them over unresolved)."""

    def __init__(self, cls: type, kwargs: dict[str, Any], shared: dict[str, list]) -> None:
        self.inner = cls(**kwargs, **{k: ray.get(v[0]) for k, v in shared.items()})

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.inner(batch)


def require_teacher_fits(teacher: Teacher) -> None:
    """Fail at once, naming the ``teacher.actors`` setting, when no node can hold a scoring actor
    of ``teacher`` (each ensemble member's pool in turn); Ray would wait for one forever. Every
    kind sizes its pool from ``teacher.actors``."""
    specs = [teacher] if isinstance(teacher, ScorerSpec) else [s for _, _, s in teacher.members]
    for spec in specs:
        require_pool_fits("teacher.actors", spec.actors, spec.num_cpus)


def score_examples(ds: ray.data.Dataset, spec: ScorerSpec) -> ray.data.Dataset:
    """Tokenise (CPU tasks), then score in an autoscaling actor pool.

    For a CPU pool the pre-stage output is materialised first: its actors would otherwise hold
    every core of a small node while the tokeniser tasks wait for one (a silent hang). A GPU
    pool streams from the tokeniser instead, so the object store holds a window of the rows,
    not every pending shard's tokens (tens of GB at MS MARCO's scale). The rows are cut into
    contiguous blocks of a few batches: an actor takes whole blocks, so one block per length
    bucket would leave all but one actor idle, and contiguous cuts keep the buckets.
    """
    actors = spec.actors
    if spec.prestage is not None:
        ds = ds.map_batches(
            spec.prestage, fn_kwargs=spec.prestage_kwargs, batch_size=spec.prestage_batch_size
        ).repartition(target_num_rows_per_block=actors.batch_size * BATCHES_PER_BLOCK)
        if not actors.num_gpus:
            ds = ds.materialize()
    fn, kwargs = spec.actor_cls, spec.actor_kwargs
    if spec.shared:
        shared = {k: [ray.put(v)] for k, v in spec.shared.items()}
        fn, kwargs = _WithShared, {"cls": spec.actor_cls, "kwargs": kwargs, "shared": shared}
    return ds.map_batches(
        fn,
        fn_constructor_kwargs=kwargs,
        batch_size=actors.batch_size,
        num_cpus=spec.num_cpus,
        num_gpus=actors.num_gpus or None,
        resources=actors.resources or None,
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors),
    )


def _arrow(ds: ray.data.Dataset) -> list[pa.Table]:
    return [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]


def score_dataset(teacher: Teacher, ds: ray.data.Dataset) -> ray.data.Dataset:
    """``ds`` (``qid, eid, kind, query, text``) scored by ``teacher``.

    An ensemble materialises its input (a shard of whole queries, ``teacher.shard_rows`` rows at
    most), scores it with each member and combines per query in the driver.
    """
    if isinstance(teacher, ScorerSpec):
        return score_examples(ds, teacher)
    ds = ds.materialize()
    tables = []
    for _, _, scorer in teacher.members:
        out = score_examples(ds, scorer).select_columns(["qid", "eid", "kind", "score"])
        tables.append(pa.concat_tables(ray.get(out.to_arrow_refs())))
    return ray.data.from_arrow(teacher.combine_tables(tables))


def score_by_shard(
    spec: ScorerSpec,
    ds: ray.data.Dataset,
    collector: ShardCollector,
    on_shard: Callable[[int, pa.Table], None],
    on_rows: Callable[[int], None],
) -> None:
    """Score ``ds`` (the rows of several shards, ``qid, eid, kind, text, query``) in one
    pipeline, so one actor pool starts for all of them, and call ``on_shard(k, table)`` as each
    shard's rows (``qid, eid, kind, score``) are complete. The input is read shard after shard
    and the blocks are dispatched in that order, so the shards complete nearly in turn and the
    driver holds the few that straddle the blocks in flight. Ray Data's ``preserve_order`` would
    make that strict, but then one slow or retried block stalls every row behind it (seen as a
    progress bar stuck for 90 s when a node was lost mid-stage)."""
    scored = score_examples(ds, spec).select_columns(["qid", "eid", "kind", "score"])
    for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        if table.num_rows:
            on_rows(table.num_rows)
            for k, shard in collector.add(table):
                on_shard(k, shard)
    collector.finish()


def collect(ds: ray.data.Dataset, schema: pa.Schema, on_rows=None) -> pa.Table:
    """The scored dataset as one Arrow table in ``schema`` (a shard: bounded by shard_rows);
    ``on_rows(n)`` is called as each block of ``n`` rows arrives."""
    tables = []
    for t in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if t.num_rows:
            tables.append(t)
            if on_rows is not None:
                on_rows(t.num_rows)
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def rerank_teacher(
    first_stage: Run,
    queries: Mapping[str, str],
    passages: Mapping[str, str],
    cfg: JobConfig,
    run_dir: RunDir,
    *,
    source: str = "run",
) -> Run:
    """Score every pair of ``first_stage`` with the configured teacher (raw teacher scores), a
    group of whole queries at a time (at most ``teacher.shard_rows`` pairs, as the score stage
    does), so per-query ensembles stay correct. The trained teacher is used when
    ``teacher.train`` is set, as in the score stage."""
    trained = run_dir.path("teacher_model") if cfg.teacher.train is not None else None
    teacher = build_teacher(cfg.teacher, TeacherEnv(run=run_dir, job=cfg, trained_model=trained))
    require_teacher_fits(teacher)
    start = time.perf_counter()
    out: Run = {}
    n_pairs = 0
    for table in pair_groups(first_stage, queries, passages, cfg.teacher.shard_rows, source):
        with unwrap_ray_error():
            scored = score_dataset(teacher, ray.data.from_arrow(table))
            parts = _arrow(scored.select_columns(["qid", "eid", "score"]))
        n_out = sum(t.num_rows for t in parts)
        if n_out != table.num_rows:
            raise StageError(f"teacher returned {n_out} scores for {table.num_rows} pairs")
        result = pa.concat_tables(parts, promote_options="permissive")
        check_scores(result)
        for qid, pid, score in zip(
            result.column("qid").to_pylist(),
            result.column("eid").to_pylist(),
            result.column("score").to_pylist(),
            strict=True,
        ):
            out.setdefault(qid, {})[pid] = float(score)
        n_pairs += table.num_rows
        log.info(
            "teacher rerank: %d pairs scored (%.1f pairs/s)",
            n_pairs,
            n_pairs / max(time.perf_counter() - start, 1e-9),
        )
    return out
