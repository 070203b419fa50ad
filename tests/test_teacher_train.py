"""teacher-train: the demo cross-encoder learns its collection on Ray Train + DeepSpeed."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from raykd.errors import InputError
from raykd.run_dir import RunDir
from raykd.stages.pipeline import run_stage, stage_by_name
from raykd.teacher.finetune import pair_accuracy, training_rows
from tests.train_helpers import write_pool


def teacher_config(demo_config, run_dir, **train):
    raw = demo_config.model_dump(mode="json")
    raw["run_dir"] = str(run_dir)
    raw["teacher"]["train"] = {
        "epochs": 5,
        "batch_size": 8,
        "n_negatives": 4,
        "lr": 3e-3,
        "warmup_steps": 2,
        "report_every": 5,
        **train,
    }
    return type(demo_config).model_validate(raw)


def held_out_rows(run: RunDir, seed: int):
    """Train queries with random negatives drawn independently of the training negatives."""

    def read(rel):
        return pq.read_table(run.path(rel))

    return training_rows(
        read("pool"),
        read("qrels/train"),
        read("queries/train"),
        read("corpus"),
        n_negatives=4,
        seed=seed,
        pool_path="pool",
    )


@pytest.mark.slow
def test_teacher_train_improves_pair_accuracy(ray_session, demo_config, prepared_run, tmp_path):
    cfg = teacher_config(demo_config, tmp_path / "run")
    run = RunDir.open(cfg.run_dir)
    write_pool(prepared_run, run, per_query=40)
    assert run_stage(stage_by_name("teacher-train"), cfg, run)
    rows = held_out_rows(run, seed=123)
    max_len = cfg.teacher.max_query_length + cfg.teacher.max_passage_length
    before = pair_accuracy(cfg.teacher.model, rows, max_length=max_len)
    after = pair_accuracy(run.path("teacher_model"), rows, max_length=max_len)
    info = run.read_json("manifests/teacher-train.json")["info"]
    print(f"pair accuracy before {before:.3f} after {after:.3f}; {info}")
    assert after >= before + 0.2 and after >= 0.8, (before, after)
    assert info["loss"] < info["first_loss"]


def test_query_without_pool_negatives_is_an_input_error(prepared_run, tmp_path):
    run = RunDir.open(str(tmp_path / "run"))
    write_pool(prepared_run, run, per_query=1)
    qrels = pq.read_table(run.path("qrels/train"))
    # A pool holding only each query's positive leaves no negative.
    pool = qrels.select(["qid", "pid"])
    with pytest.raises(InputError, match="no negative in the pool"):
        training_rows(
            pool,
            qrels,
            pq.read_table(run.path("queries/train")),
            pq.read_table(run.path("corpus")),
            n_negatives=4,
            seed=0,
            pool_path="pool",
        )
