"""Uniformly random negatives."""

from __future__ import annotations

import numpy as np

from raykd.candidates.pool import OnShort, QueryPool, check_count


def random_negatives(
    pool: QueryPool,
    m: int,
    rng_or_seed: int | np.random.Generator | None,
    *,
    on_short: OnShort = "fail",
) -> np.ndarray:
    """Indices of ``m`` "neg" rows drawn uniformly without replacement, in ascending row order.

    ``rng_or_seed`` is anything ``np.random.default_rng`` takes; a Generator is advanced in place.
    Fewer than ``m`` negatives: InsufficientCandidates, or with ``on_short="fill"`` all of them.
    """
    neg = np.flatnonzero(pool.negatives())
    k = check_count(len(neg), m, on_short, qid=pool.qid)
    rng = np.random.default_rng(rng_or_seed)
    return np.sort(rng.choice(neg, size=k, replace=False)).astype(np.int64)
