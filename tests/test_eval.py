"""Eval: dense search vs brute force, rerank vs dense scores, the eval stage end to end."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.config import ActorPoolSpec, IndexSpec
from raykd.data.trec import read_run
from raykd.errors import InputError, StageError
from raykd.evaluation.metrics import evaluate
from raykd.evaluation.rerank import fetch_passages, rerank_dense, run_pids, truncate_run
from raykd.evaluation.table import format_table
from raykd.on_ray.encoding import dense_retrieve
from raykd.retrieval.dense_search import DenseModel, search_embeddings

DIM = 8


def _write_shards(root, vecs, pids, sizes):
    start = 0
    for i, n in enumerate(sizes):
        part = vecs[start : start + n]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), DIM)
        pq.write_table(
            pa.table({"pid": pids[start : start + n], "embedding": emb}),
            root / f"part-{i:03d}.parquet",
        )
        start += n


@pytest.mark.parametrize("depth", [5, 100])
def test_dense_search_equals_brute_force(tmp_path, depth):
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((37, DIM)).astype(np.float32)
    pids = [f"d{i}" for i in range(37)]
    _write_shards(tmp_path, vecs, pids, [10, 0, 20, 7])
    queries = rng.standard_normal((6, DIM)).astype(np.float32)
    qids = [f"q{i}" for i in range(6)]

    run = search_embeddings(str(tmp_path), qids, queries, depth, IndexSpec())

    sims = queries @ vecs.T
    k = min(depth, len(pids))
    for i, qid in enumerate(qids):
        top = np.argsort(-sims[i], kind="stable")[:k]
        ranked = sorted(run[qid].items(), key=lambda kv: -kv[1])
        assert [p for p, _ in ranked] == [pids[j] for j in top]
        np.testing.assert_allclose([s for _, s in ranked], sims[i, top], rtol=1e-5, atol=1e-6)


def test_truncate_run_keeps_top_by_score_then_docno():
    run = {"q": {"a": 1.0, "b": 3.0, "c": 1.0, "d": 2.0}}
    assert truncate_run(run, 3) == {"q": {"b": 3.0, "d": 2.0, "a": 1.0}}
    with pytest.raises(ValueError):
        truncate_run(run, 0)


def test_format_table_rows_and_columns():
    text = format_table(
        {
            "split": "dev",
            "n_judged": 2,
            "systems": ["bm25", "init"],
            "measures": ["RR@10", "nDCG@10"],
            "bm25": {"RR@10": 0.5, "nDCG@10": 0.25},
            "init": {"RR@10": 1.0, "nDCG@10": 0.125},
            "settings": {"depth": 1000},
        }
    )
    lines = text.splitlines()
    assert lines[0] == "split dev (2 judged queries)"
    assert lines[1].split() == ["system", "RR@10", "nDCG@10"]
    assert lines[3].split() == ["bm25", "0.5000", "0.2500"]
    assert lines[4].split() == ["init", "1.0000", "0.1250"]


def _student(cfg):
    st = cfg.student
    return DenseModel(st.model, st.pooling, st.normalize, st.max_query_length, 64)


def test_rerank_by_student_equals_dense_scores(ray_session, demo_config, prepared_run, tmp_path):
    from raykd.stages.evaluate import read_queries

    queries = dict(list(read_queries(prepared_run, "dev").items())[:8])
    model = _student(demo_config)
    dense = dense_retrieve(
        prepared_run.uri_of("corpus"),
        str(tmp_path / "emb"),
        list(queries),
        list(queries.values()),
        model,
        depth=15,
        index=IndexSpec(),
        actors=ActorPoolSpec(batch_size=64),
        key="eval.actors",
    )
    passages = fetch_passages(prepared_run, run_pids(dense), "dense run")
    # Shuffle the first-stage scores: the rerank must not depend on them.
    first = {q: {p: float(i) for i, p in enumerate(reversed(list(d)))} for q, d in dense.items()}
    reranked = rerank_dense(first, queries, passages, model, batch_size=16)
    assert reranked.keys() == dense.keys()
    for qid in dense:
        assert reranked[qid].keys() == dense[qid].keys()
        pids = list(dense[qid])
        np.testing.assert_allclose(
            [reranked[qid][p] for p in pids], [dense[qid][p] for p in pids], atol=1e-5
        )


def test_fetch_passages_rejects_unknown_pid(prepared_run):
    with pytest.raises(InputError, match="not in the corpus"):
        fetch_passages(prepared_run, ["no-such-pid"], "first.trec")


def _eval_config(demo_config, tmp_path, **eval_fields):
    from raykd.config import validate

    raw = demo_config.model_dump(mode="json")
    raw["run_dir"] = str(tmp_path / "run")
    raw["eval"].update(
        {"depth": 50, "rerank_depth": 10, "actors": {"batch_size": 64}, **eval_fields}
    )
    raw["student"]["max_passage_length"] = 64
    return validate(raw, "test")


def _prepare(cfg):
    from raykd.run_dir import RunDir
    from raykd.stages.pipeline import run_stage, stage_by_name

    run = RunDir.open(cfg.run_dir)
    run_stage(stage_by_name("prepare"), cfg, run)
    return run


def test_eval_stage_all_systems(ray_session, demo_config, demo_collection, tmp_path, capsys):
    from raykd.stages.evaluate import read_qrels
    from raykd.stages.pipeline import run_stage, stage_by_name

    cfg = _eval_config(demo_config, tmp_path)
    run = _prepare(cfg)
    # Stand-in for a trained student: a copy of the initial checkpoint, committed as train would.
    shutil.copytree(demo_collection.student_dir, run.path("student"))
    run.write_json("manifests/train.json", {"stage": "train", "fingerprint": "stand-in"})

    assert run_stage(stage_by_name("eval"), cfg, run)

    metrics = run.read_json("metrics.json")
    systems = ["bm25", "init", "student", "teacher_rerank"]
    assert metrics["systems"] == systems
    assert metrics["split"] == "dev"
    assert metrics["n_queries"] == metrics["n_judged"] == 40
    assert metrics["measures"] == ["RR@10", "nDCG@10", "R@50", "R@100", "R@1000"]
    qrels = read_qrels(run, "dev")
    for system in systems:
        trec = read_run(run.path(f"runs/{system}.trec"))
        assert len(trec) == 40
        depth = 10 if system == "teacher_rerank" else 50
        assert all(len(d) == depth for d in trec.values())
        recomputed = evaluate(qrels, trec, metrics["measures"], 1)
        assert recomputed == pytest.approx(metrics[system], abs=1e-12)
        assert 0.0 <= metrics[system]["RR@10"] <= 1.0
    # The stand-in student is the initial checkpoint: the same rankings, scores equal up to
    # float32 rounding (batch composition differs between the two encodings).
    student, init = read_run(run.path("runs/student.trec")), read_run(run.path("runs/init.trec"))
    assert student.keys() == init.keys()
    for qid in init:
        assert student[qid].keys() == init[qid].keys()
        assert list(student[qid].values()) == pytest.approx(list(init[qid].values()), abs=1e-5)
    # The reranked run holds exactly BM25's top 10 per query.
    bm25 = read_run(run.path("runs/bm25.trec"))
    reranked = read_run(run.path("runs/teacher_rerank.trec"))
    assert {q: set(d) for q, d in reranked.items()} == {
        q: set(d) for q, d in truncate_run(bm25, 10).items()
    }
    # The measures reached the tracked run of the training (the stand-in's manifest: no step).
    from tests.test_tracking import tensorboard_scalars

    tb = tensorboard_scalars(run.path("tracking/tensorboard/train-stand-in"))
    assert len(tb) == 4 * 5
    assert tb["eval/student/nDCG_10"] == [(0, pytest.approx(metrics["student"]["nDCG@10"]))]
    # Corpus embeddings stayed in staging, which is gone.
    assert not list((tmp_path / "run" / ".staging").glob("eval-*"))
    assert not (tmp_path / "run" / "embeddings").exists()

    table = format_table(metrics)
    for system in systems:
        assert system in table
    # The CLI prints the same table after `raykd run`.
    from raykd.cli import _print_summary

    _print_summary(run)
    assert capsys.readouterr().out.strip() == table


def test_eval_without_student_needs_no_train_stage(ray_session, demo_config, tmp_path):
    from raykd.stages.pipeline import fingerprint, run_stage, stage_by_name

    cfg = _eval_config(demo_config, tmp_path, systems=["bm25", "init"])
    run = _prepare(cfg)
    assert run_stage(stage_by_name("eval"), cfg, run)
    metrics = run.read_json("metrics.json")
    assert metrics["systems"] == ["bm25", "init"]
    assert sorted(p.name for p in (tmp_path / "run" / "runs").iterdir()) == [
        "bm25.trec",
        "init.trec",
    ]
    # Evaluating the student does need train.
    with_student = cfg.model_copy(
        update={"eval": cfg.eval.model_copy(update={"systems": ["student"]})}
    )
    with pytest.raises(RuntimeError, match="needs 'train'"):
        fingerprint(stage_by_name("eval"), with_student, run)


def test_eval_student_without_student_dir_is_an_error(ray_session, demo_config, tmp_path):
    from raykd.stages.pipeline import run_stage, stage_by_name

    cfg = _eval_config(demo_config, tmp_path, systems=["bm25", "student"])
    run = _prepare(cfg)
    run.write_json("manifests/train.json", {"stage": "train", "fingerprint": "stand-in"})
    with pytest.raises(StageError, match="run the train stage first"):
        run_stage(stage_by_name("eval"), cfg, run)
    assert not run.exists("metrics.json")


def test_teacher_reranks_the_union_of_bm25_and_dense(ray_session, demo_config, tmp_path):
    """rerank_sources [bm25, dense]: the reranked pool per query is exactly BM25's top 10 plus
    the mining bi-encoder's top 10, which is the init's run when it is the same model."""
    from raykd.config import validate
    from raykd.stages.pipeline import run_stage, stage_by_name

    raw = _eval_config(
        demo_config, tmp_path, systems=["bm25", "init", "teacher_rerank"]
    ).model_dump(mode="json")
    raw["eval"].update(rerank_sources=["bm25", "dense"], passage_max_length=64)
    raw["mining"]["dense"] = {"model": raw["student"]["model"], "pooling": "mean", "max_length": 64}
    raw["student"]["max_query_length"] = 64
    cfg = validate(raw, "test")
    run = _prepare(cfg)
    assert run_stage(stage_by_name("eval"), cfg, run)

    bm25 = truncate_run(read_run(run.path("runs/bm25.trec")), 10)
    dense = truncate_run(read_run(run.path("runs/init.trec")), 10)
    reranked = read_run(run.path("runs/teacher_rerank.trec"))
    assert reranked.keys() == bm25.keys()
    for qid, docs in reranked.items():
        assert set(docs) == set(bm25[qid]) | set(dense[qid])
    # The dense source adds passages BM25 missed (the demo's lexical mismatch).
    assert sum(len(d) for d in reranked.values()) > sum(len(d) for d in bm25.values())
    settings = run.read_json("metrics.json")["settings"]
    assert settings["rerank_sources"] == ["bm25", "dense"]


def test_dense_rerank_source_needs_a_dense_model(ray_session, demo_config, tmp_path):
    from raykd.stages.pipeline import run_stage, stage_by_name

    cfg = _eval_config(demo_config, tmp_path, systems=["teacher_rerank"], rerank_sources=["dense"])
    run = _prepare(cfg)
    with pytest.raises(StageError, match="mining.dense.model is not set"):
        run_stage(stage_by_name("eval"), cfg, run)
    assert not run.exists("metrics.json")
