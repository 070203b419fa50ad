"""Rerank mode: rescore a first-stage run (BM25 top-k, a TREC run file) by a student or teacher.

- ``rerank_dense``: a bi-encoder (the student, or its initial checkpoint) scores each (query,
  passage) pair as the dot product of its ``TextEncoder`` embeddings, exactly what dense
  retrieval with the same model would score them. Encoding runs in the driver: a rerank touches
  only the run's passages.
- the teacher: ``pair_groups`` cuts the run into tables of (query, passage) pairs, whole
  queries each, which ``raykd.on_ray.scoring.rerank_teacher`` scores on Ray Data.

A first-stage run naming a query or passage that is not in the collection is bad input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from raykd.data.passages import passage_texts
from raykd.data.trec import Run
from raykd.errors import InputError

if TYPE_CHECKING:
    from raykd.retrieval.dense_search import DenseModel
    from raykd.run_dir import RunDir

log = logging.getLogger(__name__)

_PAIR_COLUMNS = ("qid", "eid", "kind", "query", "text")
_RERANK_KIND = "rerank"


def truncate_run(run: Run, depth: int) -> Run:
    """Each query's top ``depth`` documents by score (ties by docno, as ``write_run`` orders)."""
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    out: Run = {}
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        out[qid] = dict(ranked)
    return out


def run_pids(run: Run) -> set[str]:
    """Every pid a run ranks, over all its queries."""
    return {pid for docs in run.values() for pid in docs}


def fetch_passages(run_dir: RunDir, pids: Iterable[str], source: str) -> dict[str, str]:
    """``{pid: passage_text}`` for ``pids``, streamed from the prepared corpus (texts of other
    passages are never kept). A pid not in the corpus is an InputError naming ``source``."""
    wanted = pa.array(sorted(set(pids)), type=pa.string())
    found: dict[str, str] = {}
    dataset = pads.dataset(run_dir.path("corpus"), filesystem=run_dir.fs, format="parquet")
    for batch in dataset.to_batches(
        columns=["pid", "title", "text"], filter=pc.field("pid").isin(wanted)
    ):
        found.update(zip(batch.column("pid").to_pylist(), passage_texts(batch), strict=True))
    if len(found) < len(wanted):
        missing = sorted(set(wanted.to_pylist()) - found.keys())
        raise InputError(
            source, f"{len(missing)} passages are not in the corpus, e.g. {missing[0]!r}"
        )
    return found


def _query_text(queries: Mapping[str, str], qid: str, source: str) -> str:
    text = queries.get(qid)
    if text is None:
        raise InputError(source, f"query {qid!r} is not in the eval queries")
    return text


def rerank_dense(
    first_stage: Run,
    queries: Mapping[str, str],
    passages: Mapping[str, str],
    model: DenseModel,
    *,
    batch_size: int = 256,
    dtype: str = "fp32",
    source: str = "run",
) -> Run:
    """Score every (query, passage) pair of ``first_stage`` by the bi-encoder's inner product."""
    from raykd.retrieval.encoder import TextEncoder

    start = time.perf_counter()
    qids = sorted(first_stage)
    q_texts = [_query_text(queries, q, source) for q in qids]
    pids = sorted(run_pids(first_stage))

    def encoder(path: str, max_length: int) -> TextEncoder:
        return TextEncoder(
            path,
            pooling=model.pooling,
            normalize=model.normalize,
            max_length=max_length,
            dtype=dtype,
        )

    q_vecs = encoder(model.query_tower, model.query_max_length).encode(q_texts, batch_size)
    p_texts = [passages[p] for p in pids]
    p_vecs = encoder(model.model, model.passage_max_length).encode(p_texts, batch_size)
    row_of = {pid: i for i, pid in enumerate(pids)}
    out: Run = {}
    for qi, qid in enumerate(qids):
        docs = list(first_stage[qid])
        rows = np.fromiter((row_of[p] for p in docs), dtype=np.int64, count=len(docs))
        scores = p_vecs[rows] @ q_vecs[qi]
        out[qid] = dict(zip(docs, scores.tolist(), strict=True))
    log.info(
        "dense rerank: %d queries, %d passages in %.1f s",
        len(qids),
        len(pids),
        time.perf_counter() - start,
    )
    return out


def pair_groups(
    first_stage: Run,
    queries: Mapping[str, str],
    passages: Mapping[str, str],
    max_rows: int,
    source: str,
) -> Iterator[pa.Table]:
    """Tables of (qid, eid=pid, kind "rerank", query, text) of ``first_stage``'s pairs, whole
    queries each, cut once a table reaches ``max_rows`` rows. A query not in ``queries`` is an
    InputError naming ``source``."""
    cols: dict[str, list[str]] = {c: [] for c in _PAIR_COLUMNS}
    for qid in sorted(first_stage):
        query = _query_text(queries, qid, source)
        for pid in first_stage[qid]:
            cols["qid"].append(qid)
            cols["eid"].append(pid)
            cols["kind"].append(_RERANK_KIND)
            cols["query"].append(query)
            cols["text"].append(passages[pid])
        if len(cols["qid"]) >= max_rows:
            yield pa.table(cols)
            cols = {c: [] for c in _PAIR_COLUMNS}
    if cols["qid"]:
        yield pa.table(cols)
