"""TREC run files (``qid Q0 docno rank score tag``) and qrels (``qid 0 docno rel``).

In memory a run is ``{qid: {docno: score}}`` and qrels are ``{qid: {docno: rel}}``: the shape
ir_measures takes directly. Ranks are not kept on reading; order is defined by the scores.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from raykd.data.files import atomic_local
from raykd.data.lines import read_lines
from raykd.errors import InputError

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

_WHITESPACE = re.compile(r"\s")


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, whitespace-split fields) of the non-blank lines."""
    for lineno, text in read_lines(str(path)):
        yield lineno, text.split()


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file; raises InputError on the first malformed line."""
    run: Run = {}
    for lineno, fields in _lines(path):
        if len(fields) != 6:
            raise InputError(
                path,
                f"expected 6 fields (qid Q0 docno rank score tag), got {len(fields)}",
                line=lineno,
            )
        qid, _, docno, rank, score, _ = fields
        try:
            int(rank)
        except ValueError:
            raise InputError(path, f"rank {rank!r} is not an integer", line=lineno) from None
        try:
            value = float(score)
        except ValueError:
            raise InputError(path, f"score {score!r} is not a number", line=lineno) from None
        if not math.isfinite(value):
            raise InputError(path, f"score {score!r} is not finite", line=lineno)
        docs = run.setdefault(qid, {})
        if docno in docs:
            raise InputError(path, f"duplicate document {docno!r} for query {qid!r}", line=lineno)
        docs[docno] = value
    return run


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read TREC qrels; raises InputError on the first malformed line or duplicate judgement."""
    qrels: Qrels = {}
    for lineno, fields in _lines(path):
        if len(fields) != 4:
            raise InputError(
                path, f"expected 4 fields (qid 0 docno rel), got {len(fields)}", line=lineno
            )
        qid, _, docno, rel = fields
        try:
            value = int(rel)
        except ValueError:
            raise InputError(path, f"relevance {rel!r} is not an integer", line=lineno) from None
        docs = qrels.setdefault(qid, {})
        if docno in docs:
            raise InputError(
                path, f"duplicate judgement of {docno!r} for query {qid!r}", line=lineno
            )
        docs[docno] = value
    return qrels


def _check_id(kind: str, value: str) -> None:
    if not value or _WHITESPACE.search(value):
        raise ValueError(f"{kind} {value!r} is empty or contains whitespace")


def _write_atomic(path: str | os.PathLike[str], lines: Iterator[str]) -> None:
    with atomic_local(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())


def write_run(path: str | os.PathLike[str], run: Run, tag: str = "raykd") -> None:
    """Write a run atomically: queries in sorted order, each by score descending, ranks 1..n.

    Ties are broken by docno so the file is deterministic.
    """
    _check_id("tag", tag)

    def lines() -> Iterator[str]:
        for qid in sorted(run):
            _check_id("qid", qid)
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (docno, score) in enumerate(ranked, start=1):
                _check_id("docno", docno)
                score = float(score)
                if not math.isfinite(score):
                    raise ValueError(f"score of {docno!r} for query {qid!r} is not finite")
                yield f"{qid} Q0 {docno} {rank} {score!r} {tag}\n"

    _write_atomic(path, lines())


def write_qrels(path: str | os.PathLike[str], qrels: Qrels) -> None:
    """Write qrels atomically, queries and documents in sorted order."""

    def lines() -> Iterator[str]:
        for qid in sorted(qrels):
            _check_id("qid", qid)
            for docno in sorted(qrels[qid]):
                _check_id("docno", docno)
                yield f"{qid} 0 {docno} {int(qrels[qid][docno])}\n"

    _write_atomic(path, lines())


def run_from_arrays(
    qids: Sequence[str],
    ids: np.ndarray,
    scores: np.ndarray,
    pids: Sequence[str] | np.ndarray | None = None,
) -> Run:
    """Turn FAISS search output into a run.

    ``ids`` and ``scores`` are ``(len(qids), k)``; ``ids`` are row positions into ``pids`` (or, when
    ``pids`` is None, used as the docno themselves). FAISS pads missing results with -1: skipped.
    """
    ids = np.asarray(ids)
    scores = np.asarray(scores)
    if ids.ndim != 2 or ids.shape != scores.shape or ids.shape[0] != len(qids):
        raise ValueError(
            f"ids {ids.shape} and scores {scores.shape} must both be (len(qids)={len(qids)}, k)"
        )
    if len(set(qids)) != len(qids):
        raise ValueError("qids contain duplicates")
    lookup = None if pids is None else np.asarray(pids, dtype=object)
    if lookup is not None and ids.size and ids.max() >= len(lookup):
        raise ValueError(f"id {int(ids.max())} out of range for {len(lookup)} pids")
    valid = ids >= 0
    all_valid = bool(valid.all())
    run: Run = {}
    for i, qid in enumerate(qids):
        row_ids, row_scores = ids[i], scores[i]
        if not all_valid:
            row_ids, row_scores = row_ids[valid[i]], row_scores[valid[i]]
        names = lookup[row_ids].tolist() if lookup is not None else map(str, row_ids.tolist())
        run[str(qid)] = dict(zip(names, row_scores.tolist(), strict=True))
    return run
