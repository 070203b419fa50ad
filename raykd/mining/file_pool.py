"""Pools imported from files: a TREC run, or sentence-transformers' ``msmarco-hard-negatives``.

The hard-negatives layout is one JSON object per line::

    {"qid": 571018, "pos": [7349777], "neg": {"bm25": [...], "msmarco-distilbert-...": [...]}}

Ids may be strings or integers. Negatives are ranked in the file's order: systems as they
appear, each system's list in order, duplicates kept at their first rank. The file has no
scores: ``score`` is 0. ``pos`` is ignored (the qrels are authoritative).

A qid the training queries lack is an InputError unless the training queries are a capped
subset (``data.max_train_queries``), where such rows are skipped. A pid the corpus lacks is
always an InputError. Both name the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from raykd.data.lines import read_lines
from raykd.data.schemas import POOL
from raykd.data.trec import read_run
from raykd.errors import InputError

Located = tuple[str, list[tuple[str, float, int]]]  # qid, [(pid, score, line)]


def _trec_records(path: str) -> Iterator[Located]:
    run = read_run(path)  # validates the format, duplicates and scores
    first_line: dict[tuple[str, str], int] = {}
    for lineno, text in read_lines(path):
        fields = text.split()
        first_line.setdefault((fields[0], fields[2]), lineno)
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
        yield qid, [(pid, score, first_line[(qid, pid)]) for pid, score in ranked]


def _id(value: object, what: str, path: str, lineno: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise InputError(
            path, f"{what} must be a non-empty string or integer, got {value!r}", line=lineno
        )
    return str(value)


def _st_records(path: str) -> Iterator[Located]:
    seen: dict[str, int] = {}
    for lineno, text in read_lines(path):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(path, f"not valid JSON: {e.msg}", line=lineno) from None
        if not isinstance(obj, dict):
            raise InputError(path, "expected a JSON object", line=lineno)
        if "qid" not in obj or "neg" not in obj:
            raise InputError(path, 'expected keys "qid" and "neg"', line=lineno)
        qid = _id(obj["qid"], "qid", path, lineno)
        if qid in seen:
            raise InputError(path, f"qid {qid!r} repeats line {seen[qid]}", line=lineno)
        seen[qid] = lineno
        neg = obj["neg"]
        if not isinstance(neg, dict) or not all(isinstance(v, list) for v in neg.values()):
            raise InputError(path, '"neg" must map system names to lists of pids', line=lineno)
        pids = [_id(p, "pid", path, lineno) for system in neg.values() for p in system]
        yield qid, [(p, 0.0, lineno) for p in dict.fromkeys(pids)]


def read_file_pool(
    path: str,
    fmt: str,
    train_qids: set[str],
    corpus_pids: pa.Array,
    *,
    subset: bool,
) -> tuple[pa.Table, int]:
    """The file's pool for the training queries, and how many file queries were skipped."""
    records = _trec_records(path) if fmt == "trec" else _st_records(path)
    qids, pids, ranks, scores, lines = [], [], [], [], []
    skipped = 0
    for qid, docs in records:
        if qid not in train_qids:
            if not subset:
                raise InputError(
                    path, f"qid {qid!r} is not a training query", line=docs[0][2] if docs else None
                )
            skipped += 1
            continue
        for rank, (pid, score, lineno) in enumerate(docs, start=1):
            qids.append(qid)
            pids.append(pid)
            ranks.append(rank)
            scores.append(score)
            lines.append(lineno)
    known = pc.is_in(pa.array(pids, pa.string()), value_set=corpus_pids)
    if pids and not pc.all(known).as_py():
        bad = min((i for i, ok in enumerate(known.to_pylist()) if not ok), key=lines.__getitem__)
        raise InputError(
            path, f"pid {pids[bad]!r} (query {qids[bad]!r}) is not in the corpus", line=lines[bad]
        )
    table = pa.table(
        [
            qids,
            pids,
            pa.array(ranks, pa.int32()),
            pa.array(scores, pa.float32()),
            ["file"] * len(qids),
        ],
        schema=POOL,
    )
    return table, skipped
