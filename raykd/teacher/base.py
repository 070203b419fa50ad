"""The teacher interface: how a teacher kind plugs into the ``score`` stage.

The score stage (``raykd.stages.score``) reads ``examples/``, joins the query text by qid,
splits the rows into shards by qid hash (every row of a query lands in the same shard) and, for each
shard not yet scored, calls ``teacher.score(ds)`` on a Ray Dataset with columns

    qid, eid, kind, query, text            (strings; ``text`` is the example passage/dark text)

and expects back a Dataset with exactly one row per input row and columns

    qid, eid, kind, score                  (``score`` float32, the raw teacher score)
    + score_<name> for each name in ``teacher.columns``   (float32, e.g. ensemble members)

Row order does not matter; the stage checks row counts, duplicates and finiteness itself.

Adding a kind
-------------
Register a builder for the ``teacher.kind`` value::

    @register_teacher("bm25")
    def build_bm25(cfg: TeacherConfig, env: TeacherEnv) -> Teacher: ...

``cfg`` is the ``TeacherSection`` (top-level teacher) or a ``TeacherMember`` (inside an ensemble);
read only the fields both share or check ``isinstance``; the run-time knobs a member lacks
(``batch_size``, ``dtype``, ``num_gpus_per_actor``, ``min_actors``/``max_actors``,
``torch_threads``, ``max_query_length``/``max_passage_length``) come from ``env.job.teacher``.
``env`` carries the run directory (e.g. ``env.run.uri_of("corpus")`` for BM25 statistics) and the
whole job config. The registry imports ``raykd.teacher.<kind>`` lazily (see ``KIND_MODULES``),
so the module only has to exist and call ``register_teacher`` at import time.

A builder returns a ``Teacher``: anything with ``score(ds) -> ds`` and ``columns``. Two shapes:

* ``ScorerSpec`` (the usual case): a CPU pre-stage plus a pool of scoring actors.
  ``score_job.score_examples`` applies it as

      ds.map_batches(prestage, fn_kwargs=prestage_kwargs, batch_size=prestage_batch_size)  # tasks
        .map_batches(actor_cls, fn_constructor_kwargs=actor_kwargs, batch_size=batch_size,
                     num_gpus=num_gpus, num_cpus=num_cpus,
                     compute=ActorPoolStrategy(min_size=min_actors, max_size=max_actors),
                     max_restarts=-1, max_task_retries=-1)

  - ``prestage(batch: dict[str, np.ndarray], **prestage_kwargs) -> dict[str, np.ndarray]`` runs as
    stateless Ray tasks on CPU (tokenisation). It receives the columns above and may add any
    columns (token ids as object arrays of int arrays, lengths, ...). Heavy state (a tokenizer)
    should be cached per worker process (``functools.lru_cache`` on a loader). To bucket by length,
    return the rows of the batch sorted by length: the actor stage cuts its batches from contiguous
    rows, so each batch then holds texts of similar length (pad per batch to the batch's max).
  - ``actor_cls(**actor_kwargs)`` is constructed once per actor (load the model there);
    ``actor_cls.__call__(batch) -> dict`` receives the pre-stage's columns and returns
    ``qid, eid, kind, score`` (+ ``score_<name>`` columns). Use ``torch.inference_mode()``.
  - Both must be picklable (module-level function/class; kwargs of plain values).

* Any other object with ``score(ds) -> ds`` and ``columns`` (an ensemble): it may build its
  members with ``build_teacher(member_cfg, env)``, score the same input with each
  (``member.score(ds)``), and combine per query. A shard holds every row of its queries, so
  per-query normalisation may materialise the shard (shards are sized by
  ``teacher.shard_rows``) and combine in NumPy/pandas, then return ``ray.data.from_arrow(...)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import ray.data

    from raykd.config import JobConfig, TeacherMember, TeacherSection
    from raykd.run_dir import RunDir

    TeacherConfig = TeacherSection | TeacherMember

# Columns every teacher receives and returns (besides score columns).
INPUT_COLUMNS = ("qid", "eid", "kind", "query", "text")
KEY_COLUMNS = ("qid", "eid", "kind")


@dataclass(frozen=True)
class TeacherEnv:
    """What a builder may need beyond its own config section."""

    run: RunDir  # committed artifacts of the run (corpus/, queries/, teacher_model/)
    job: JobConfig  # the whole job config
    trained_model: str | None = None  # path of the committed teacher_model/ when teacher.train set

    def model_ref(self, model: str | None) -> str:
        """The model to load: the trained teacher when there is one, else ``model`` (resolved)."""
        from raykd.models import resolve_model

        if self.trained_model is not None:
            return self.trained_model
        if not model:
            raise ValueError("teacher.model is not set")
        return resolve_model(model)


@runtime_checkable
class Teacher(Protocol):
    """What scores examples: ``score`` maps a Ray Dataset of (query, passage) rows to one with a
    float32 ``score`` column (and ``score_<name>`` columns).
    """

    columns: tuple[str, ...]  # extra float32 output columns are named score_<name>

    def score(self, ds: ray.data.Dataset) -> ray.data.Dataset: ...


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer applied as CPU pre-stage tasks + an autoscaling pool of scoring actors."""

    name: str  # for logs
    actor_cls: type
    actor_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    num_gpus: float = 0.0
    num_cpus: float | None = None  # per actor; None: Ray Data's default (1 CPU)
    min_actors: int = 1
    max_actors: int = 1
    prestage: Callable[..., dict[str, Any]] | None = None
    prestage_kwargs: dict[str, Any] = field(default_factory=dict)
    prestage_batch_size: int = 2048  # also the length-bucketing window
    columns: tuple[str, ...] = ()

    def score(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        from raykd.teacher.score_job import score_examples

        return score_examples(ds, self)


Builder = Callable[["TeacherConfig", TeacherEnv], Teacher]

_REGISTRY: dict[str, Builder] = {}

# teacher.kind -> module that registers it on import.
KIND_MODULES = {
    "cross_encoder": "raykd.teacher.cross_encoder",
    "bi_encoder": "raykd.teacher.bi_encoder",
    "bm25": "raykd.teacher.bm25",
    "ensemble": "raykd.teacher.ensemble",
}


def register_teacher(kind: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder for ``teacher.kind == kind``."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[kind] = fn
        return fn

    return deco


def build_teacher(cfg: TeacherConfig, env: TeacherEnv) -> Teacher:
    """The Teacher for ``cfg.kind`` (a TeacherSection or an ensemble's TeacherMember)."""
    if cfg.kind not in _REGISTRY and cfg.kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[cfg.kind])
    if cfg.kind not in _REGISTRY:
        raise ValueError(f"teacher.kind {cfg.kind!r} has no registered scorer")
    return _REGISTRY[cfg.kind](cfg, env)
