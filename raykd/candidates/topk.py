"""The hardest negatives, by teacher score or by first-stage retriever rank."""

from __future__ import annotations

from typing import Literal

import numpy as np

from raykd.candidates.pool import OnShort, QueryPool, check_count

TopkBy = Literal["teacher", "retriever"]


def topk(
    pool: QueryPool, m: int, *, by: TopkBy = "teacher", on_short: OnShort = "fail"
) -> np.ndarray:
    """Indices of the ``m`` hardest "neg" rows, hardest first.

    by="teacher": descending teacher score. by="retriever": ascending retriever rank, rows with
    unknown rank (-1) after all ranked ones. Ties go to the lower row index, so the result is
    deterministic. Fewer than ``m`` negatives: InsufficientCandidates, or with ``on_short="fill"``
    all of them.
    """
    neg = np.flatnonzero(pool.negatives())
    k = check_count(len(neg), m, on_short, qid=pool.qid)
    if by == "teacher":
        key = -pool.scores[neg]
        order = np.lexsort((neg, key))
    elif by == "retriever":
        ranks = pool.ranks[neg]
        order = np.lexsort((neg, ranks, ranks < 0))
    else:
        raise ValueError(f"by must be 'teacher' or 'retriever', got {by!r}")
    return neg[order[:k]].astype(np.int64)
