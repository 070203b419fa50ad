"""The teacher interface: how a teacher kind plugs into the ``score`` stage.

A teacher is a description of a scoring job, not the job: this package never imports Ray. The
score stage (``raykd.stages.score``) reads ``examples/``, joins the query text by qid, splits the
rows into shards by qid hash (every row of a query lands in the same shard) and runs the
teacher on Ray Data over the rows of every shard not yet scored
(``raykd.on_ray.scoring.score_by_shard``), rows

    qid, eid, kind, query, text            (strings; ``text`` is the example passage/dark text)

and expects back exactly one row per input row with

    qid, eid, kind, score                  (``score`` float32, the raw teacher score)
    + score_<name> for each name in ``teacher.columns``   (float32, e.g. ensemble members)

Row order does not matter; the stage checks row counts, duplicates and finiteness itself.

Adding a kind
-------------
Register a builder for the ``teacher.kind`` value::

    @register_teacher("bm25")
    def build_bm25(cfg: TeacherConfig, env: TeacherEnv) -> ScorerSpec: ...

``cfg`` is the ``TeacherSection`` (top-level teacher) or a ``TeacherMember`` (inside an ensemble);
read only the fields both share or check ``isinstance``; the run-time knobs a member lacks
(``teacher.actors``, ``max_query_length``/``max_passage_length``, ``bucket_rows``) come from
``env.job.teacher``. ``env`` carries the run directory (e.g. ``env.run.uri_of("corpus")`` for
BM25 statistics) and the whole job config. The registry imports ``raykd.teacher.<kind>`` lazily
(see ``KIND_MODULES``), so the module only has to exist and call ``register_teacher`` on import.

A builder returns a ``ScorerSpec``: a CPU pre-stage plus a pool of scoring actors, which
``raykd.on_ray.scoring.score_examples`` applies as

    ds.map_batches(prestage, fn_kwargs=prestage_kwargs, batch_size=prestage_batch_size)  # tasks
      .map_batches(actor_cls, fn_constructor_kwargs=actor_kwargs | shared, batch_size=...,
                   num_gpus=actors.num_gpus, num_cpus=num_cpus,
                   compute=ActorPoolStrategy(min_size=actors.min_actors, ...))

- ``prestage(batch: dict[str, np.ndarray], **prestage_kwargs) -> dict[str, np.ndarray]`` runs as
  stateless tasks on CPU (tokenisation). It receives the columns above and may add any columns
  (token ids as object arrays of int arrays, lengths, ...). Heavy state (a tokenizer) should be
  cached per worker process (``functools.lru_cache`` on a loader). To bucket by length, return
  the rows of the batch sorted by length: the actor stage cuts its batches from contiguous rows,
  so each batch then holds texts of similar length (pad per batch to the batch's max).
- ``actor_cls(**actor_kwargs, **shared)`` is constructed once per actor (load the model there);
  ``actor_cls.__call__(batch) -> dict`` receives the pre-stage's columns and returns
  ``qid, eid, kind, score`` (+ ``score_<name>`` columns). Use ``torch.inference_mode()``.
  ``shared`` holds large values every actor needs (BM25's corpus statistics): they are placed
  in Ray's object store once rather than shipped with each actor.
- Both must be picklable (module-level function/class; kwargs of plain values).

The ``ensemble`` kind returns an ``EnsembleTeacher`` instead (``raykd.teacher.ensemble``): its
members' ScorerSpecs and the per-query combination of their scores.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raykd.config import ActorPoolSpec

if TYPE_CHECKING:
    from raykd.config import JobConfig, TeacherMember, TeacherSection
    from raykd.run_dir import RunDir
    from raykd.teacher.ensemble import EnsembleTeacher

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


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer applied as CPU pre-stage tasks + an autoscaling pool of scoring actors."""

    name: str  # for logs
    actor_cls: type
    actors: ActorPoolSpec  # batch size, GPUs and autoscaling bounds of the actor pool
    actor_kwargs: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # large actor kwargs, sent once
    num_cpus: float | None = None  # per actor; None: Ray Data's default (1 CPU)
    prestage: Callable[..., dict[str, Any]] | None = None
    prestage_kwargs: dict[str, Any] = field(default_factory=dict)
    prestage_batch_size: int = 2048  # also the length-bucketing window
    columns: tuple[str, ...] = ()


if TYPE_CHECKING:
    Teacher = ScorerSpec | EnsembleTeacher

Builder = Callable[["TeacherConfig", TeacherEnv], "Teacher"]

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
