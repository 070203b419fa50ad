"""The ``eval`` stage: each system in ``eval.systems`` on the eval split -> ``runs/``, metrics.json.

Systems:

- ``bm25``: BM25 over the corpus (``mining.bm25``), to ``eval.depth``;
- ``init``: the student's initial checkpoint (``student.model``) zero-shot, dense retrieval;
- ``student``: the trained student (``student/``, committed by ``train``), dense retrieval;
- ``teacher_rerank``: the teacher reranking a first-stage pool: the top ``eval.rerank_depth`` of
  each of ``eval.rerank_sources`` (BM25, and/or the mining bi-encoder), merged per query. The
  teacher's per-query normalisation (ensembles) runs over that pool.

Each writes ``runs/<system>.trec``; ``metrics.json`` holds ``{system: {measure: value}}`` plus
``split``, ``systems`` (row order), ``measures``, query counts, timings and the settings used.
Corpus embeddings live in the stage's staging folder and are dropped after each system's search.
The measures also go to the trackers (``eval/<system>/<measure>``), into the tracked run of the
training whose student was evaluated, at its last step.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import pyarrow.dataset as pads

from raykd.data.trec import Qrels, Run, write_run
from raykd.errors import StageError
from raykd.evaluation.metrics import evaluate
from raykd.evaluation.rerank import fetch_passages, run_pids, truncate_run
from raykd.on_ray.encoding import dense_retrieve
from raykd.on_ray.scoring import rerank_teacher
from raykd.retrieval.dense_search import DenseModel
from raykd.run_dir import RunDir
from raykd.stages.pipeline import StageContext, StageResult
from raykd.stages.train import run_name
from raykd.tracking import TrackedRun, eval_points
from raykd.tuning.loggers import trial_tracking

log = logging.getLogger(__name__)

_QUERY_CHUNK = 1024


def read_queries(run: RunDir, split: str) -> dict[str, str]:
    t = pads.dataset(run.path(f"queries/{split}"), filesystem=run.fs, format="parquet").to_table(
        ["qid", "text"]
    )
    return dict(zip(t.column("qid").to_pylist(), t.column("text").to_pylist(), strict=True))


def read_qrels(run: RunDir, split: str) -> Qrels:
    t = pads.dataset(run.path(f"qrels/{split}"), filesystem=run.fs, format="parquet").to_table(
        ["qid", "pid", "rel"]
    )
    qrels: Qrels = {}
    for q, p, r in zip(*(t.column(c).to_pylist() for c in ("qid", "pid", "rel")), strict=True):
        qrels.setdefault(q, {})[p] = int(r)
    return qrels


def bm25_run(ctx: StageContext, queries: dict[str, str], depth: int) -> Run:
    from raykd.mining.bm25 import BM25Retriever

    retriever = BM25Retriever.for_run(ctx.run, ctx.cfg.mining.bm25)
    qids, texts = list(queries), list(queries.values())
    run: Run = {}
    start = time.perf_counter()
    for i in range(0, len(qids), _QUERY_CHUNK):
        chunk = qids[i : i + _QUERY_CHUNK]
        pids, scores = retriever.retrieve(texts[i : i + _QUERY_CHUNK], depth)
        for qid, row_pids, row_scores in zip(chunk, pids, scores, strict=True):
            run[qid] = dict(zip(row_pids, row_scores.tolist(), strict=True))
        done = min(i + _QUERY_CHUNK, len(qids))
        log.info("bm25: %d/%d queries (%.0f q/s)", done, len(qids), done / _since(start))
    return run


def _since(start: float) -> float:
    return max(time.perf_counter() - start, 1e-9)


def dense_model(ctx: StageContext, system: str) -> DenseModel:
    """The bi-encoder a dense system evaluates, with the eval lengths."""
    cfg, st = ctx.cfg, ctx.cfg.student
    lengths = {
        "query_max_length": cfg.eval.query_max_length or st.max_query_length,
        "passage_max_length": cfg.eval.passage_max_length or st.max_passage_length,
    }
    if system == "init":
        return DenseModel(st.model, st.pooling, st.normalize, **lengths)
    from raykd.student.model import QUERY_DIR

    # URIs: the encoders resolve (on an object store: fetch) the model where they load it.
    query = f"student/{QUERY_DIR}"
    query_model = ctx.run.uri_of(query) if ctx.run.exists(query, committed=False) else None
    return DenseModel(
        ctx.run.uri_of("student"), st.pooling, st.normalize, **lengths, query_model=query_model
    )


def check_inputs(ctx: StageContext, systems: list[str]) -> None:
    """Fail before any work when a system's inputs are absent."""
    cfg = ctx.cfg
    if not systems:
        raise StageError("eval.systems is empty: nothing to evaluate")
    if "init" in systems and not cfg.student.model:
        raise StageError("eval.systems has 'init' but student.model is not set")
    if "student" in systems:
        if not ctx.run.exists("student"):
            raise StageError(
                f"eval.systems has 'student' but {ctx.run.uri_of('student')} does not exist: "
                "run the train stage first, or evaluate without it "
                "(--set 'eval.systems=[bm25,init]')"
            )
    if "teacher_rerank" in systems:
        if "dense" in cfg.eval.rerank_sources and not cfg.mining.dense.model:
            raise StageError("eval.rerank_sources has 'dense' but mining.dense.model is not set")
        if cfg.teacher.kind in ("cross_encoder", "bi_encoder") and not (
            cfg.teacher.model or cfg.teacher.train is not None
        ):
            raise StageError("eval.systems has 'teacher_rerank' but teacher.model is not set")


def rerank_pool(ctx: StageContext, queries: dict[str, str], bm25_full: Run | None) -> Run:
    """The pool the teacher reranks: each rerank source's top ``eval.rerank_depth``, merged per
    query (a passage keeps its first source's score; the teacher replaces every score)."""
    ev = ctx.cfg.eval
    runs: list[Run] = []
    for source in ev.rerank_sources:
        if source == "bm25":
            assert bm25_full is not None
            runs.append(truncate_run(bm25_full, ev.rerank_depth))
        else:  # the mine stage's bi-encoder, with its settings
            emb = "embeddings/rerank_dense"
            m = ctx.cfg.mining
            runs.append(
                dense_retrieve(
                    ctx.run.uri_of("corpus"),
                    ctx.staging.uri(emb),
                    list(queries),
                    list(queries.values()),
                    DenseModel.from_encoder(m.dense),
                    depth=ev.rerank_depth,
                    index=m.index,
                    actors=m.actors,
                    key="mining.actors",
                )
            )
            ctx.run.delete(f"{ctx.staging.rel}/{emb}")
    pool: Run = {}
    for run in runs:
        for qid, docs in run.items():
            merged = pool.setdefault(qid, {})
            for pid, score in docs.items():
                merged.setdefault(pid, score)
    return pool


def _write_run(ctx: StageContext, rel: str, run: Run, tag: str) -> None:
    if ctx.run.is_local:
        write_run(ctx.staging.local_path(rel), run, tag)
        return
    fd, tmp = tempfile.mkstemp(suffix=".trec")
    os.close(fd)
    try:
        write_run(tmp, run, tag)
        ctx.run.fs.create_dir(ctx.staging.path("runs"), recursive=True)
        with open(tmp, "rb") as src, ctx.run.fs.open_output_stream(ctx.staging.path(rel)) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    finally:
        os.unlink(tmp)


def run_eval(ctx: StageContext) -> StageResult:
    cfg, ev = ctx.cfg, ctx.cfg.eval
    split = cfg.data.splits.eval
    systems = list(dict.fromkeys(ev.systems))
    check_inputs(ctx, systems)
    queries = read_queries(ctx.run, split)
    qrels = read_qrels(ctx.run, split)
    n_judged = sum(any(r >= ev.rel_threshold for r in d.values()) for d in qrels.values())
    log.info(
        "eval on %s: %d queries, %d judged; systems %s", split, len(queries), n_judged, systems
    )

    bm25_full: Run | None = None
    if "bm25" in systems or ("teacher_rerank" in systems and "bm25" in ev.rerank_sources):
        bm25_full = bm25_run(ctx, queries, max(ev.depth, ev.rerank_depth))

    metrics: dict[str, Any] = {}
    wall: dict[str, float] = {}
    rows: dict[str, int] = {}
    for system in systems:
        start = time.perf_counter()
        if system == "bm25":
            assert bm25_full is not None
            run = truncate_run(bm25_full, ev.depth) if ev.rerank_depth > ev.depth else bm25_full
        elif system in ("init", "student"):
            emb = f"embeddings/{system}"
            run = dense_retrieve(
                ctx.run.uri_of("corpus"),
                ctx.staging.uri(emb),
                list(queries),
                list(queries.values()),
                dense_model(ctx, system),
                depth=ev.depth,
                index=ev.index,
                actors=ev.actors,
                key="eval.actors",
            )
            ctx.run.delete(f"{ctx.staging.rel}/{emb}")
        else:  # teacher_rerank
            first = rerank_pool(ctx, queries, bm25_full)
            source = "+".join(ev.rerank_sources) + " pool"
            passages = fetch_passages(ctx.run, run_pids(first), source)
            run = rerank_teacher(first, queries, passages, cfg, ctx.run, source=source)
        _write_run(ctx, f"runs/{system}.trec", run, system)
        metrics[system] = evaluate(qrels, run, ev.measures, ev.rel_threshold)
        wall[system] = round(time.perf_counter() - start, 3)
        rows[f"runs/{system}.trec"] = sum(len(d) for d in run.values())
        log.info("eval %s (%.1f s): %s", system, wall[system], _fmt(metrics[system]))

    result = {
        "split": split,
        "systems": systems,
        "measures": list(metrics[systems[0]]),
        "rel_threshold": ev.rel_threshold,
        "n_queries": len(queries),
        "n_judged": n_judged,
        "wall_time_s": wall,
        "settings": settings(ctx),
        **metrics,
    }
    ctx.run.write_json(f"{ctx.staging.rel}/metrics.json", result)
    track_eval(ctx, result)
    from raykd.evaluation.table import format_table

    log.info("eval results:\n%s", format_table(result))
    return StageResult(
        rows=rows,
        info={"metrics": metrics, "wall_time_s": wall},
        count=(len(queries), "queries"),
    )


def track_eval(ctx: StageContext, result: dict[str, Any]) -> None:
    """Log the measures into the train stage's tracked run at its last step when the student is
    evaluated (the same TensorBoard folder, MLflow and W&B run as its training curves), else
    into a tracked run of this eval's own."""
    train = None
    if "student" in result["systems"] and ctx.run.exists("manifests/train.json"):
        train = ctx.manifest("train")
    if train is not None:
        name, step = run_name("train", train["fingerprint"]), train.get("info", {}).get("step")
    else:
        name, step = run_name(ctx.stage, ctx.fingerprint), 0
    tracked = TrackedRun.open(trial_tracking(ctx.cfg.tracking), ctx.run, name)
    if tracked is None:
        return
    try:
        with tracked.trackers(resumable=False) as trackers:
            trackers.log(eval_points(result), int(step or 0))
    finally:
        tracked.publish()


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in values.items())


def settings(ctx: StageContext) -> dict[str, Any]:
    cfg, ev, st = ctx.cfg, ctx.cfg.eval, ctx.cfg.student
    out: dict[str, Any] = {
        "depth": ev.depth,
        "index": ev.index.model_dump(mode="json"),
        "query_max_length": ev.query_max_length or st.max_query_length,
        "passage_max_length": ev.passage_max_length or st.max_passage_length,
        "student": {"model": st.model, "pooling": st.pooling, "normalize": st.normalize},
        "bm25": cfg.mining.bm25.model_dump(mode="json"),
    }
    if "teacher_rerank" in ev.systems:
        out["rerank_depth"] = ev.rerank_depth
        out["rerank_sources"] = list(ev.rerank_sources)
        if "dense" in ev.rerank_sources:
            out["rerank_dense"] = cfg.mining.dense.model_dump(mode="json")
        out["teacher"] = {
            "kind": cfg.teacher.kind,
            "model": cfg.teacher.model,
            "trained": cfg.teacher.train is not None,
        }
    return out
