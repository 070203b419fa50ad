"""The ``train`` stage: Ray Train's TorchTrainer around the DeepSpeed loop of ``train_loop``.

Checkpoints live under ``<run_dir>/checkpoints/<name>`` with a name derived from the stage's
fingerprint, so relaunching the same stage resumes from its latest checkpoint, while a changed
config starts a fresh run. The tracked run (``<run_dir>/tracking``, ``raykd.tracking``) has the
same name, so its curves continue too.
"""

from __future__ import annotations

import logging
from typing import Any

from raykd.config import JobConfig
from raykd.console import progress
from raykd.data.schemas import TRAIN
from raykd.errors import InputError
from raykd.models import resolve_model
from raykd.on_ray.capacity import require_fits
from raykd.on_ray.errors import unwrap_ray_error
from raykd.stages.pipeline import StageContext, StageResult, stage_by_name
from raykd.tracking import TrackedRun, flat_params
from raykd.training.loop import loop_config, train_loop_per_worker, trainer_section
from raykd.tuning.loggers import trial_tracking
from raykd.tuning.report import DEV_STUDENT_TASK, tune_callbacks

log = logging.getLogger(__name__)

STUDENT_TASK = "raykd.student.task:student_task"


def run_name(stage: str, fingerprint: str) -> str:
    """The name of a training stage's checkpoints and tracked run: a relaunch finds both."""
    return f"{stage}-{fingerprint[:12]}"


def tracked_run(ctx: StageContext) -> TrackedRun | None:
    """The stage's tracked run, its parameters the config its outputs depend on."""
    keys = stage_by_name(ctx.stage).config_keys
    params = flat_params({k: ctx.cfg.subtree(k) for k in keys})
    name = run_name(ctx.stage, ctx.fingerprint)
    return TrackedRun.open(trial_tracking(ctx.cfg.tracking), ctx.run, name, params)


def fit(
    *,
    task: str,
    job: JobConfig,
    section: str,
    dataset,
    source: str,
    model_dir: str,
    export_uri: str,
    storage_path: str,
    name: str,
    callbacks: list | None = None,
    tracked: TrackedRun | None = None,
) -> dict[str, Any]:
    """Train ``task`` on ``dataset`` with TorchTrainer, as the trainer section at ``section``
    ("train" or "teacher.train") of ``job`` says; returns the final summary metrics. Its
    reports reach the ``tracked`` run's trackers, published to the run dir even on failure.

    Shared by the student ``train`` stage and the ``teacher-train`` stage.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from raykd.on_ray.train_backend import torch_config

    params = trainer_section(job, section)
    # Ray Train waits forever for workers no node can hold: say so before counting rows.
    cpus, extra = params.cpus_per_worker, params.worker_resources
    require_fits(
        {
            f"{section}.cpus_per_worker {cpus:g}": {"CPU": cpus},
            f"{section}.worker_resources {extra}": extra,
            f"{section}.use_gpu true": {"GPU": 1} if params.use_gpu else {},
        }
    )
    n_rows = dataset.count()
    steps = params.steps_per_epoch(n_rows)
    if steps < 1:
        raise InputError(
            source,
            f"{n_rows} training rows give no full step of {params.batch_size} queries "
            f"({params.num_workers} workers x {params.grad_accum} accumulation)",
        )
    callbacks = list(callbacks or [])
    if tracked is not None:
        from raykd.on_ray.tracking import TrackingCallback

        callbacks.append(TrackingCallback(tracked, last_step=steps * params.epochs))
    resources = {"CPU": cpus, **extra}
    if params.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(
            task,
            job,
            section,
            model_dir=model_dir,
            steps_per_epoch=steps,
            export_uri=export_uri,
        ),
        torch_config=torch_config("nccl" if params.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=params.num_workers,
            use_gpu=params.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            storage_path=storage_path,
            name=name,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=params.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=params.max_failures),
            callbacks=callbacks,
        ),
        datasets={"train": dataset},
        # Rows in file order: with the seeded dropout, a seed's run on one worker is repeatable.
        dataset_config=ray.train.DataConfig(execution_options=_ordered_ingest()),
    )
    log.info(
        "%s: %d rows, %d steps/epoch x %d epochs, %d workers, ZeRO-%d (checkpoints %s/%s)",
        task,
        n_rows,
        steps,
        params.epochs,
        params.num_workers,
        params.zero_stage,
        storage_path,
        name,
    )
    # Rank 0 prints each report's step (raykd.training.loop); the console reads it back.
    bar = progress(section.replace(".", "-"), steps * params.epochs, "steps")
    try:
        with unwrap_ray_error(), bar:
            result = trainer.fit()
    finally:
        if tracked is not None:
            tracked.publish()
    return {**result.return_value, "steps_per_epoch": steps, "rows": n_rows}


READ_CPUS = 0.25


def _ordered_ingest():
    from ray.data import DataContext, ExecutionOptions

    # Ray's default_ingest_options() passes the deprecated exclude_resources along.
    current = DataContext.get_current().execution_options
    return ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=True,
        verbose_progress=current.verbose_progress,
    )


def run_train(ctx: StageContext) -> StageResult:
    import ray.data

    cfg = ctx.cfg
    source = ctx.run.uri_of(f"train/{cfg.candidates.strategy}")
    if cfg.student.model is None:
        raise InputError("config", "student.model is not set")
    # A fraction of a CPU per read: the trainer's workers already hold most of a small node, and
    # a whole-CPU read task can wait forever behind them (or behind a reservation a stopped Tune
    # trial leaked).
    ds = ray.data.read_parquet(source, num_cpus=READ_CPUS)
    missing = [c for c in TRAIN.names if c not in ds.schema().names]
    if missing:
        raise InputError(source, f"missing columns {missing} (expected {TRAIN.names})")
    summary = fit(
        task=DEV_STUDENT_TASK if cfg.tune.dev_set else STUDENT_TASK,
        job=cfg,
        section="train",
        dataset=ds,
        source=source,
        model_dir=resolve_model(cfg.student.model),
        export_uri=ctx.staging.uri("student"),
        storage_path=ctx.run.uri_of("checkpoints"),
        name=run_name(ctx.stage, ctx.fingerprint),
        callbacks=tune_callbacks(cfg),
        tracked=tracked_run(ctx),
    )
    keys = (
        "loss",
        "first_loss",
        "step",
        "start_step",
        "samples",
        "samples_per_s",
        "kept_total",
        "batch_total",
        "steps_per_epoch",
        "rows",
    )
    return StageResult(
        rows={"student": 1},
        info={k: summary.get(k) for k in keys},
        count=(summary["step"] - summary["start_step"], "steps"),
    )
