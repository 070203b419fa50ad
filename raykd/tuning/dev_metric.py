"""A cheap per-epoch dev metric for ASHA: the student reranks BM25's top-k of a few dev queries.

Encoding the whole corpus every epoch would cost more than the epoch itself; reranking a fixed
BM25 candidate list per query ranks trials by the same measure (``tune.metric``, ir_measures) at
a fraction of the cost. The set is built once per sweep in the driver (``write_dev_set``) and
read by every training worker (``dev_student_task``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from raykd.config import JobConfig
from raykd.data.files import filesystem
from raykd.errors import InputError
from raykd.evaluation.metrics import evaluate
from raykd.run_dir import RunDir
from raykd.student.task import student_task
from raykd.training.loop import Task

log = logging.getLogger(__name__)

DEV_SET = "tune/dev_set.json"


@dataclass(frozen=True)
class DevSet:
    """The per-epoch dev rerank set: queries, BM25 candidates with their texts, qrels."""

    queries: dict[str, str]  # qid -> text
    candidates: dict[str, list[list[str]]]  # qid -> [[pid, passage text], ...] (BM25 order)
    qrels: dict[str, dict[str, int]]

    @classmethod
    def load(cls, uri: str) -> DevSet:
        fs, path = filesystem(uri)
        with fs.open_input_stream(path) as f:
            raw = json.loads(f.read().decode("utf-8"))
        return cls(raw["queries"], raw["candidates"], raw["qrels"])

    @torch.no_grad()
    def evaluate(self, model, tokenizer, job: JobConfig, batch_size: int = 64) -> float:
        """``job.tune.metric`` of the student's reranking (``model``: a DualEncoder)."""
        st = job.student
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()

        def encode(texts: list[str], max_length: int, fn) -> torch.Tensor:
            out = []
            for i in range(0, len(texts), batch_size):
                tok = tokenizer(
                    texts[i : i + batch_size],
                    max_length=max_length,
                    truncation=True,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                out.append(fn(tok["input_ids"], tok["attention_mask"]).float())
            return torch.cat(out)

        try:
            qids = list(self.queries)
            q = encode([self.queries[x] for x in qids], st.max_query_length, model.encode_query)
            flat = [(qid, pid, text) for qid in qids for pid, text in self.candidates[qid]]
            p = encode([t for _, _, t in flat], st.max_passage_length, model.encode_passage)
        finally:
            model.train(was_training)
        row = {qid: i for i, qid in enumerate(qids)}
        scores = (p * q[[row[qid] for qid, _, _ in flat]]).sum(-1).cpu().tolist()
        run: dict[str, dict[str, float]] = {qid: {} for qid in qids}
        for (qid, pid, _), s in zip(flat, scores, strict=True):
            run[qid][pid] = s
        metric = job.tune.metric
        return evaluate(self.qrels, run, [metric], job.eval.rel_threshold)[metric]


def dev_student_task(job: JobConfig, model_dir: str) -> Task:
    """The student task plus ``tune.metric`` on the dev rerank set after every epoch."""
    from transformers import AutoTokenizer

    task = student_task(job, model_dir)
    dev = DevSet.load(job.tune.dev_set)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task.on_epoch_end = lambda module: {job.tune.metric: dev.evaluate(module, tokenizer, job)}
    return task


def _table(run: RunDir, rel: str, columns: list[str], filt=None):
    if not run.exists(rel):
        raise InputError(run.uri_of(rel), "missing: run the prepare stage first")
    ds = pads.dataset(run.path(rel), filesystem=run.fs, format="parquet")
    return ds.to_table(columns=columns, filter=filt)


def write_dev_set(cfg: JobConfig, run: RunDir) -> str:
    """Build (or keep, when built with the same settings) the dev rerank set; returns its URI."""
    from raykd.data.passages import passage_texts
    from raykd.mining.bm25 import BM25Retriever

    split, tu = cfg.data.splits.eval, cfg.tune
    params = {
        "split": split,
        "queries": tu.dev_queries,
        "depth": tu.dev_depth,
        "seed": tu.seed,
        "rel_threshold": cfg.eval.rel_threshold,
        "prepare": run.read_json("manifests/prepare.json")["fingerprint"],
    }
    if run.exists(DEV_SET) and run.read_json(DEV_SET).get("params") == params:
        return run.uri_of(DEV_SET)
    start = time.perf_counter()
    qrels_t = _table(run, f"qrels/{split}", ["qid", "pid", "rel"])
    qrels: dict[str, dict[str, int]] = {}
    cols = (qrels_t.column(c).to_pylist() for c in ("qid", "pid", "rel"))
    for qid, pid, rel in zip(*cols, strict=True):
        qrels.setdefault(qid, {})[pid] = rel
    judged = sorted(q for q, d in qrels.items() if max(d.values()) >= cfg.eval.rel_threshold)
    queries_t = _table(run, f"queries/{split}", ["qid", "text"])
    texts = dict(
        zip(queries_t.column("qid").to_pylist(), queries_t.column("text").to_pylist(), strict=True)
    )
    judged = [q for q in judged if q in texts]
    if not judged:
        raise InputError(run.uri_of(f"qrels/{split}"), "no judged query to build a dev set from")
    rng = np.random.default_rng(tu.seed)
    picked = sorted(rng.choice(judged, size=min(tu.dev_queries, len(judged)), replace=False))
    bm25 = BM25Retriever.for_run(run, cfg.mining.bm25)
    ranked, _ = bm25.retrieve([texts[q] for q in picked], tu.dev_depth)
    wanted = sorted({p for pids in ranked for p in pids})
    corpus = _table(run, "corpus", ["pid", "title", "text"], pc.field("pid").isin(wanted))
    passage = dict(zip(corpus.column("pid").to_pylist(), passage_texts(corpus), strict=True))
    doc = {
        "params": params,
        "queries": {q: texts[q] for q in picked},
        "candidates": {
            q: [[p, passage[p]] for p in pids] for q, pids in zip(picked, ranked, strict=True)
        },
        "qrels": {q: qrels[q] for q in picked},
    }
    run.write_json(DEV_SET, doc)
    log.info(
        "tune: dev rerank set of %d %s queries x %d BM25 candidates in %.1f s",
        len(picked),
        split,
        tu.dev_depth,
        time.perf_counter() - start,
    )
    return run.uri_of(DEV_SET)
