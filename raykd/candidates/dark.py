"""ADAM dark candidate sets (Tao et al., Findings of ACL 2024, §3.2)."""

from __future__ import annotations

import numpy as np

from raykd.candidates.pool import OnShort, QueryPool, check_count
from raykd.candidates.topk import topk


def dark_candidates(
    pool: QueryPool,
    m: int,
    *,
    base: np.ndarray | None = None,
    n_masked: int | None = None,
    seed: int | np.random.Generator | None = 0,
    on_short: OnShort = "fail",
) -> np.ndarray:
    """Indices of an ADAM dark set: original negatives, reinforced twins, masked positives.

    Layout (the order the build stage writes candidates in):
    1. the ``m`` original negatives: ``base`` (indices of "neg" rows chosen by any strategy) or,
       by default, the top-``m`` by teacher score, in that order;
    2. the "rein" rows whose ``parents`` entry names one of those negatives, grouped by parent in
       the order of step 1 (a negative without a reinforced twin simply contributes none);
    3. the "mask" rows: all of them, or ``n_masked`` drawn uniformly with ``seed``, in row order.

    Fewer than ``m`` negatives or ``n_masked`` masked positives: InsufficientCandidates, or with
    ``on_short="fill"`` as many as exist.
    """
    if base is None:
        base = topk(pool, m, by="teacher", on_short=on_short)
    else:
        base = np.asarray(base, dtype=np.int64)
        if (pool.kinds[base] != "neg").any() or len(np.unique(base)) != len(base):
            raise ValueError("base must index distinct 'neg' rows of the pool")
        check_count(len(base), m, on_short, what="base negatives", qid=pool.qid)
        base = base[:m]
    rein = np.flatnonzero(pool.kind_mask("rein"))
    twins = [rein[pool.parents[rein] == pid] for pid in pool.ids[base]]
    masked = np.flatnonzero(pool.kind_mask("mask"))
    if n_masked is not None:
        k = check_count(len(masked), n_masked, on_short, what="masked positives", qid=pool.qid)
        rng = np.random.default_rng(seed)
        masked = np.sort(rng.choice(masked, size=k, replace=False))
    return np.concatenate([base, *twins, masked]).astype(np.int64)
