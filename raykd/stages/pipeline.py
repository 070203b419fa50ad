"""Stages, their fingerprints and manifests, and the skip-or-run logic of ``raykd run``.

A stage's fingerprint hashes the config subtrees it reads, the fingerprints of its upstream
stages and (for ingest) its input files. ``run`` skips a stage whose committed manifest carries
the same fingerprint and whose outputs exist; any change re-runs it, and the changed fingerprint
then re-runs everything downstream.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from raykd.config import JobConfig, dump_yaml
from raykd.console import STORY, rate_text
from raykd.errors import StageError
from raykd.run_dir import JOB_FILE, MANIFESTS, RunDir, Staging

log = logging.getLogger(__name__)

TRACKED_PACKAGES = (
    "raykd",
    "ray",
    "torch",
    "transformers",
    "deepspeed",
    "faiss-cpu",
    "pyarrow",
    "bm25s",
    "ir-measures",
    "pydantic",
)


class MissingUpstream(StageError):
    """A stage asked for before the stages it reads have run."""

    def __init__(self, stage: str, upstream: str) -> None:
        super().__init__(
            f"stage {stage!r} needs {upstream!r} to have run first: run "
            f"`raykd run --config <job.yaml> --until {stage}`, or `raykd {upstream}` first"
        )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; the stage's staging folder is discarded, its committed outputs and
    any resumable partial work (score shards, training checkpoints) are kept."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


@dataclass
class StageResult:
    """What a stage reports: row counts per output, and anything worth keeping for provenance."""

    rows: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    # The stage's main count for the console, e.g. (22875, "pairs"); default: its first
    # output's rows.
    count: tuple[int, str] | None = None

    def headline(self) -> tuple[int, str]:
        if self.count is not None:
            return self.count
        return (next(iter(self.rows.values()), 0), "rows")


@dataclass
class StageContext:
    cfg: JobConfig
    run: RunDir
    staging: Staging
    stage: str
    fingerprint: str  # stable across re-runs of the same inputs: keys resumable partial work

    def manifest(self, stage: str) -> dict[str, Any]:
        """The committed manifest of an upstream stage."""
        return self.run.read_json(f"{MANIFESTS}/{stage}.json")


@dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function" taking a StageContext and returning a StageResult
    config_keys: tuple[str, ...]
    upstream: tuple[str, ...]
    outputs: tuple[str, ...]  # run-dir paths; "{strategy}" is the configured strategy
    input_hasher: str | None = None  # "module:function"(cfg) -> dict, for stages reading raw files
    enabled: Callable[[JobConfig], bool] = lambda cfg: True
    # When set, the upstream stages this config actually needs (a subset of ``upstream``).
    needs: Callable[[JobConfig], tuple[str, ...]] | None = None

    def upstream_stages(self, cfg: JobConfig) -> tuple[str, ...]:
        return self.upstream if self.needs is None else self.needs(cfg)

    def output_paths(self, cfg: JobConfig) -> list[str]:
        return [o.format(strategy=cfg.candidates.strategy) for o in self.outputs]

    def resolve(self, target: str) -> Callable[..., Any]:
        module, fn = target.split(":")
        return getattr(importlib.import_module(module), fn)


def _teacher_trained(cfg: JobConfig) -> bool:
    return cfg.teacher.train is not None


def _eval_needs(cfg: JobConfig) -> tuple[str, ...]:
    """Eval needs the trained student only when it evaluates it, the teacher model only for
    teacher reranking; ``raykd eval --set eval.systems=[bm25,init]`` runs right after prepare."""
    needs = ["prepare"]
    if "student" in cfg.eval.systems:
        needs.append("train")
    if "teacher_rerank" in cfg.eval.systems:
        needs.append("teacher-train")
    return tuple(needs)


# The order is the run order. A stage's config_keys are every config subtree its output depends
# on; upstream fingerprints carry the rest.
STAGES: tuple[Stage, ...] = (
    Stage(
        "prepare",
        "raykd.stages.prepare:run_prepare",
        ("data",),
        (),
        ("corpus", "queries", "qrels"),
        input_hasher="raykd.stages.prepare:hash_inputs",
    ),
    Stage("mine", "raykd.stages.mine:run_mine", ("mining",), ("prepare",), ("pool",)),
    Stage(
        "teacher-train",
        "raykd.stages.teacher_train:run_teacher_train",
        ("teacher",),
        ("prepare", "mine"),
        ("teacher_model",),
        enabled=_teacher_trained,
    ),
    Stage(
        "augment",
        "raykd.stages.augment:run_augment",
        ("augment", "teacher"),
        ("mine", "teacher-train"),
        ("examples",),
    ),
    Stage(
        "score",
        "raykd.stages.score:run_score",
        ("teacher",),
        ("mine", "augment", "teacher-train"),
        ("scores",),
    ),
    Stage(
        "build",
        "raykd.stages.build:run_build",
        # The confidence and entropies are taken at the kl loss's teacher temperature.
        ("candidates", "train.loss"),
        ("score",),
        ("train/{strategy}",),
    ),
    Stage(
        "train",
        "raykd.stages.train:run_train",
        ("student", "train", "candidates"),
        ("build",),
        ("student",),
    ),
    Stage(
        "eval",
        "raykd.stages.evaluate:run_eval",
        (
            "eval",
            "student",
            "teacher",
            "mining.bm25",
            "mining.dense",
            "mining.actors",
            "mining.index",
        ),
        ("prepare", "train", "teacher-train"),
        ("runs", "metrics.json"),
        needs=_eval_needs,
    ),
    Stage("report", "raykd.stages.report:run_report", (), ("eval",), ("report",)),
)


def stage_by_name(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; known: {', '.join(s.name for s in STAGES)}")


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def fingerprint(stage: Stage, cfg: JobConfig, run: RunDir) -> tuple[str, dict[str, Any]]:
    """The stage's fingerprint and the inputs it was computed from."""
    inputs: dict[str, Any] = {
        "config": {k: cfg.subtree(k) for k in stage.config_keys},
        "upstream": {},
    }
    for up in stage.upstream_stages(cfg):
        up_stage = stage_by_name(up)
        if not up_stage.enabled(cfg):
            continue
        path = f"{MANIFESTS}/{up}.json"
        if not run.exists(path):
            raise MissingUpstream(stage.name, up)
        inputs["upstream"][up] = run.read_json(path)["fingerprint"]
    if stage.input_hasher:
        inputs["files"] = stage.resolve(stage.input_hasher)(cfg)
    return _hash(inputs), inputs


def is_current(stage: Stage, cfg: JobConfig, run: RunDir) -> bool:
    path = f"{MANIFESTS}/{stage.name}.json"
    if not run.exists(path):
        return False
    try:
        fp, _ = fingerprint(stage, cfg, run)
    except MissingUpstream:
        return False
    outputs = stage.output_paths(cfg)
    return run.read_json(path).get("fingerprint") == fp and all(run.exists(o) for o in outputs)


def run_stage(
    stage: Stage,
    cfg: JobConfig,
    run: RunDir,
    *,
    force: bool = False,
    before_run: Callable[[], None] | None = None,
    position: tuple[int, int] | None = None,
) -> bool:
    """Run one stage unless current, then commit its outputs. Returns True when it ran.

    The stage writes each declared output under ``ctx.staging``; only after it returns are the
    outputs moved into place, so a failure or Ctrl-C leaves the previous outputs untouched.
    ``position`` (k, n) numbers the stage's console lines within a pipeline.
    """
    name = f"[{position[0]}/{position[1]}] {stage.name}" if position else stage.name
    if not force and is_current(stage, cfg, run):
        log.info("%s: up to date, skipped", name, extra=STORY)
        return False
    fp, inputs = fingerprint(stage, cfg, run)
    if before_run is not None:
        before_run()
    staging = run.new_staging(stage.name)
    log.info("%s: running", name, extra=STORY)
    log.info("%s: staging at %s", stage.name, staging.rel)
    start = time.perf_counter()
    try:
        try:
            result: StageResult = stage.resolve(stage.target)(
                StageContext(cfg=cfg, run=run, staging=staging, stage=stage.name, fingerprint=fp)
            )
        except KeyboardInterrupt:
            raise Interrupted(stage.name) from None
        missing = [
            o
            for o in stage.output_paths(cfg)
            if not run.exists(f"{staging.rel}/{o}", committed=False)
        ]
        if missing:
            raise StageError(f"stage {stage.name!r} did not write {missing}")
        # Drop the old manifest first: outputs half-swapped under it must not look current.
        run.delete(f"{MANIFESTS}/{stage.name}.json")
        for out in stage.output_paths(cfg):
            staging.commit(out)
    finally:
        staging.discard()
    wall = time.perf_counter() - start
    # The config the committed outputs came from; stage commands read it by default, so a
    # failed run must not leave its own config here.
    run.write_text(JOB_FILE, dump_yaml(cfg))
    run.write_json(
        f"{MANIFESTS}/{stage.name}.json",
        {
            "stage": stage.name,
            "fingerprint": fp,
            "inputs": inputs,
            "rows": result.rows,
            "info": result.info,
            "wall_time_s": round(wall, 3),
            "packages": package_versions(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    n, unit = result.headline()
    log.info("%s: %s", name, _done_line(n, unit, wall), extra=STORY)
    log.info("%s: rows %s", stage.name, result.rows)
    return True


def _done_line(n: int, unit: str, wall: float) -> str:
    """``22,875 pairs, 1,860 pairs/s, 12.3 s``."""
    return f"{n:,} {unit}{rate_text(n, wall, unit)}, {wall:.1f} s"


def run_pipeline(
    cfg: JobConfig,
    run: RunDir,
    *,
    until: str | None = None,
    before_run: Callable[[], None] | None = None,
) -> list[str]:
    """Run every enabled stage in order (up to ``until``); returns the stages that ran."""
    ran = []
    stages = [s for s in STAGES if s.enabled(cfg)]
    if until is not None:
        order = [s.name for s in STAGES]
        if until not in order:
            raise StageError(f"--until {until}: no such stage; stages: {', '.join(order)}")
        stages = [s for s in stages if order.index(s.name) <= order.index(until)]
    for k, stage in enumerate(stages, 1):
        # An upstream re-run with a new fingerprint changes this stage's fingerprint too.
        if run_stage(stage, cfg, run, before_run=before_run, position=(k, len(stages))):
            ran.append(stage.name)
    return ran
