"""Teacher-margin filter for likely false negatives (Parry, Ganguly, MacAvaney 2025)."""

from __future__ import annotations

import numpy as np

from raykd.candidates.pool import QueryPool


def margin_keep(pool: QueryPool, margin: float) -> np.ndarray:
    """Boolean mask of the rows that survive the margin filter.

    A "neg" row is dropped when its teacher score > min(positive scores) - ``margin``: a negative
    the teacher scores near (or above) a positive is probably an unjudged relevant passage.
    Rows of other kinds are always kept. Raises ValueError if the pool has no positive.
    """
    if not np.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin}")
    pos = pool.positives()
    if not pos.any():
        raise ValueError(f"margin filter needs a positive; query {pool.qid!r} has none")
    threshold = pool.scores[pos].min() - margin
    return ~(pool.negatives() & (pool.scores > threshold))


def margin_filter(pool: QueryPool, margin: float) -> QueryPool:
    """The pool without the negatives ``margin_keep`` drops."""
    return pool.subset(margin_keep(pool, margin))
