"""Teachers on Ray Data: a ScorerSpec as CPU pre-stage tasks and an autoscaling actor pool, the
score stage's shards through one such pool, and the rerank of a first-stage run by the teacher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray
import ray.data

from raykd.console import progress
from raykd.data.schemas import SCORES
from raykd.data.trec import Run
from raykd.errors import StageError
from raykd.evaluation.rerank import pair_groups
from raykd.on_ray.capacity import require_pool_fits
from raykd.on_ray.errors import unwrap_ray_error
from raykd.teacher.base import ScorerSpec, TeacherEnv, build_teacher
from raykd.teacher.ensemble import EnsembleTeacher
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
    """The scored dataset as one Arrow table in ``schema`` (held whole in the driver: the
    bench's pairs, the rerank's); ``on_rows(n)`` is called as each block of ``n`` rows arrives."""
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
    """Score every pair of ``first_stage`` with the configured teacher (raw teacher scores) in
    one pipeline, so one actor pool starts (one per ensemble member, which then combines per
    query over the whole run, as the score stage does). The trained teacher is used when
    ``teacher.train`` is set, as in the score stage."""
    trained = run_dir.path("teacher_model") if cfg.teacher.train is not None else None
    teacher = build_teacher(cfg.teacher, TeacherEnv(run=run_dir, job=cfg, trained_model=trained))
    require_teacher_fits(teacher)
    # Cut at shard_rows pairs (whole queries) so the input is many blocks, not one.
    pairs = list(pair_groups(first_stage, queries, passages, cfg.teacher.shard_rows, source))
    n_pairs = sum(t.num_rows for t in pairs)
    if not n_pairs:
        return {}
    specs = [s for _, _, s in teacher.members] if isinstance(teacher, EnsembleTeacher) else []
    start = time.perf_counter()
    with progress("teacher rerank", n_pairs * max(1, len(specs)), "pairs") as bar:
        with unwrap_ray_error():
            ds = ray.data.from_arrow(pairs)
            if specs:
                ds = ds.materialize()
                members = [collect(score_examples(ds, s), SCORES, bar.update) for s in specs]
                result = teacher.combine_tables(members)
            else:
                result = collect(score_examples(ds, teacher), SCORES, bar.update)
    if result.num_rows != n_pairs:
        raise StageError(f"teacher returned {result.num_rows} scores for {n_pairs} pairs")
    check_scores(result)
    out: Run = {}
    for qid, pid, score in zip(
        result.column("qid").to_pylist(),
        result.column("eid").to_pylist(),
        result.column("score").to_pylist(),
        strict=True,
    ):
        out.setdefault(qid, {})[pid] = float(score)
    if {q: d.keys() for q, d in out.items()} != {q: d.keys() for q, d in first_stage.items() if d}:
        raise StageError("teacher returned scores for other pairs than the rerank gave it")
    log.info("teacher rerank: %d pairs in %.1f s", n_pairs, time.perf_counter() - start)
    return out
