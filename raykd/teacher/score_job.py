"""Scoring on Ray Data: join query texts, apply a ScorerSpec, check and collect the scores."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raykd.errors import InputError, StageError
from raykd.teacher.base import KEY_COLUMNS, ScorerSpec

if TYPE_CHECKING:
    import ray.data

BATCHES_PER_BLOCK = 4


def actor_fault_tolerance() -> dict[str, Any]:
    """Scoring actors come back after a crash and their in-flight batches are retried.

    (Ray Data's defaults in 2.60; stated so a change of default cannot silently drop rows. Passed
    as ``ray_remote_args_fn`` because 2.60 has no named parameter for them.)
    """
    return {"max_restarts": -1, "max_task_retries": -1}


def score_examples(ds: ray.data.Dataset, spec: ScorerSpec) -> ray.data.Dataset:
    """Tokenise (CPU tasks), then score in an autoscaling actor pool.

    The pre-stage output is materialised first: scoring actors on a small CPU node would
    otherwise hold every core while the tokeniser tasks wait for one (a silent hang). It is then
    cut into contiguous blocks of a few batches: an actor takes whole blocks, so one block per
    length bucket would leave all but one actor idle, and contiguous cuts keep the buckets.
    """
    import ray.data

    if spec.prestage is not None:
        ds = (
            ds.map_batches(
                spec.prestage, fn_kwargs=spec.prestage_kwargs, batch_size=spec.prestage_batch_size
            )
            .repartition(target_num_rows_per_block=spec.batch_size * BATCHES_PER_BLOCK)
            .materialize()
        )
    return ds.map_batches(
        spec.actor_cls,
        fn_constructor_kwargs=spec.actor_kwargs,
        batch_size=spec.batch_size,
        num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus or None,
        compute=ray.data.ActorPoolStrategy(min_size=spec.min_actors, max_size=spec.max_actors),
        ray_remote_args_fn=actor_fault_tolerance,
    )


def attach_queries(
    batch: dict[str, np.ndarray], *, queries: dict[str, str], source: str
) -> dict[str, np.ndarray]:
    """Add the ``query`` column by qid; an example of an unknown query is bad input."""
    qids = batch["qid"]
    texts = np.empty(len(qids), dtype=object)
    for i, qid in enumerate(qids):
        text = queries.get(qid)
        if text is None:
            raise InputError(source, f"qid {qid!r} (eid {batch['eid'][i]!r}) is not a query")
        texts[i] = text
    out = {k: batch[k] for k in (*KEY_COLUMNS, "text")}
    out["query"] = texts
    return out


def shard_of(qids: np.ndarray | list[str], n_shards: int) -> np.ndarray:
    """Stable shard per qid (crc32, identical across processes and Python versions)."""
    return np.fromiter(
        (zlib.crc32(str(q).encode("utf-8")) % n_shards for q in qids), dtype=np.int32
    )


def add_shard(batch: dict[str, np.ndarray], *, n_shards: int) -> dict[str, np.ndarray]:
    """``batch`` with a ``shard`` column: the qid's hash bucket among ``n_shards``."""
    out = dict(batch)
    out["shard"] = shard_of(batch["qid"], n_shards)
    return out


def check_scores(table: pa.Table, columns: tuple[str, ...] = ()) -> None:
    """Every score finite and every (qid, eid) once; names the offending example."""
    for col in ("score", *(f"score_{c}" for c in columns)):
        values = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise StageError(
                f"teacher gave a non-finite {col} ({values[i]}) for qid "
                f"{table['qid'][i].as_py()!r} eid {table['eid'][i].as_py()!r} "
                f"({bad.size} such rows)"
            )
    keys = table.select(["qid", "eid"]).group_by(["qid", "eid"]).aggregate([([], "count_all")])
    dup = keys.filter(pc.greater(keys["count_all"], 1))
    if dup.num_rows:
        raise StageError(
            f"teacher returned qid {dup['qid'][0].as_py()!r} eid {dup['eid'][0].as_py()!r} "
            f"{dup['count_all'][0].as_py()} times"
        )


def collect(ds: ray.data.Dataset, schema: pa.Schema) -> pa.Table:
    """The scored dataset as one Arrow table in ``schema`` (a shard: bounded by shard_rows)."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])
