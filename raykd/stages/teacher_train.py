"""The ``teacher-train`` stage: fine-tune the cross-encoder on the training queries' pools.

Runs on the student's Ray Train + DeepSpeed machinery (``raykd.stages.train.fit``) with
the cross-encoder task of ``raykd.teacher.finetune``; writes ``teacher_model/`` (HF model dir
with tokenizer) for the score stage.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from raykd.errors import InputError
from raykd.models import resolve_model
from raykd.stages.pipeline import StageContext, StageResult
from raykd.stages.train import fit, run_name, tracked_run
from raykd.teacher.finetune import training_rows

TEACHER_TASK = "raykd.teacher.finetune:teacher_task"


def run_teacher_train(ctx: StageContext) -> StageResult:
    import ray.data

    cfg, run = ctx.cfg, ctx.run
    tt = cfg.teacher.train
    if tt is None or cfg.teacher.model is None or cfg.teacher.kind != "cross_encoder":
        raise InputError("config", "teacher-train needs teacher.kind cross_encoder and a model")
    split = cfg.data.splits.train

    def read(rel: str, columns: list[str]):
        return pq.read_table(run.path(rel), filesystem=run.fs, columns=columns)

    rows = training_rows(
        read("pool", ["qid", "pid"]),
        read(f"qrels/{split}", ["qid", "pid", "rel"]),
        read(f"queries/{split}", ["qid", "text"]),
        read("corpus", ["pid", "text"]),
        n_negatives=tt.n_negatives,
        seed=tt.seed,
        pool_path=run.uri_of("pool"),
    )
    summary = fit(
        task=TEACHER_TASK,
        job=cfg,
        section="teacher.train",
        dataset=ray.data.from_arrow(rows),
        source=run.uri_of("pool"),
        model_dir=resolve_model(cfg.teacher.model),
        export_uri=ctx.staging.uri("teacher_model"),
        storage_path=run.uri_of("checkpoints"),
        name=run_name(ctx.stage, ctx.fingerprint),
        tracked=tracked_run(ctx),
    )
    keys = ("loss", "first_loss", "step", "start_step", "samples_per_s", "rows")
    return StageResult(
        rows={"teacher_model": 1},
        info={k: summary.get(k) for k in keys},
        count=(summary["step"] - summary["start_step"], "steps"),
    )
