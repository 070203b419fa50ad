"""Stratified negatives over the teacher-score spectrum (Jang et al., SIGIR 2026).

The paper's stratified sampling "uniformly covers the entire score spectrum" of a large pool
(retriever top-k + random). Two binnings and two allocations make that concrete:

- ``equal_width`` bins with ``equal`` quotas (the default) cover the score range evenly: the
  sparse high-score region gets as many draws as the dense low-score bulk, so a hard negative's
  inclusion probability is higher than under uniform sampling.
- ``quantile`` bins with ``proportional`` quotas are a variance-reduction of uniform random
  sampling: every negative keeps the inclusion probability m / N, only the spread between draws
  shrinks. (Quantile strata are equal-sized, so there ``equal`` and ``proportional`` coincide.)

``tests/test_candidates.py`` measures both inclusion profiles over many seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from raykd.candidates.pool import OnShort, QueryPool, check_count

Binning = Literal["quantile", "equal_width"]
Allocation = Literal["equal", "proportional"]


def strata_of(scores: np.ndarray, n_strata: int, binning: Binning = "quantile") -> np.ndarray:
    """Stratum (0 = lowest scores, ``n_strata - 1`` = highest) of each score.

    quantile: rank-based, so strata have equal sizes (within one) even with tied scores: the
        score of rank r (0-based, ascending score, ties by position) among N goes to
        ``floor(r * n_strata / N)``.
    equal_width: ``n_strata`` equal bins over [min, max]; score s goes to
        ``min(floor((s - min) / (max - min) * n_strata), n_strata - 1)``, all to stratum 0 if
        max == min.
    """
    if n_strata < 1:
        raise ValueError(f"n_strata must be >= 1, got {n_strata}")
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if binning == "quantile":
        order = np.lexsort((np.arange(n), scores))
        out = np.empty(n, dtype=np.int64)
        out[order] = np.arange(n) * n_strata // n
        return out
    if binning == "equal_width":
        lo, hi = scores.min(), scores.max()
        if hi == lo:
            return np.zeros(n, dtype=np.int64)
        raw = np.floor((scores - lo) / (hi - lo) * n_strata).astype(np.int64)
        return np.minimum(raw, n_strata - 1)
    raise ValueError(f"binning must be 'quantile' or 'equal_width', got {binning!r}")


def stratum_quotas(
    m: int,
    n_strata: int,
    per_stratum: int | Sequence[int] | None,
    *,
    allocation: Allocation = "equal",
    sizes: Sequence[int] | None = None,
) -> np.ndarray:
    """How many to draw from each stratum (index 0 = lowest scores); sums to ``m``.

    per_stratum None and allocation "equal": ``m // n_strata`` each, and the remainder one each to
    the highest-score strata (hard negatives are the most informative, so they get the spare
    slots). allocation "proportional": ``m * sizes[s] / sum(sizes)`` by largest remainder (ties to
    the higher stratum), ``sizes`` being the strata's negative counts. An int ``per_stratum``:
    that many from every stratum; a sequence: one quota per stratum; explicit quotas must sum to
    ``m`` and override ``allocation``.
    """
    if per_stratum is None and allocation == "proportional":
        if sizes is None or len(sizes) != n_strata or sum(sizes) <= 0:
            raise ValueError(f"proportional allocation needs {n_strata} stratum sizes, got {sizes}")
        exact = m * np.asarray(sizes, dtype=np.float64) / float(sum(sizes))
        q = np.floor(exact).astype(np.int64)
        frac = exact - q
        # Largest remainder first; at equal remainders the higher-score stratum.
        order = np.lexsort((-np.arange(n_strata), -frac))
        q[order[: m - int(q.sum())]] += 1
        return q
    if per_stratum is None:
        if allocation != "equal":
            raise ValueError(f"allocation must be 'equal' or 'proportional', got {allocation!r}")
        q = np.full(n_strata, m // n_strata, dtype=np.int64)
        q[n_strata - m % n_strata :] += 1
        return q
    q = np.broadcast_to(np.asarray(per_stratum, dtype=np.int64), (n_strata,)).copy()
    if (q < 0).any() or q.sum() != m:
        raise ValueError(f"per_stratum {per_stratum!r} over {n_strata} strata must sum to m={m}")
    return q


def stratified(
    pool: QueryPool,
    m: int,
    n_strata: int,
    *,
    binning: Binning = "equal_width",
    allocation: Allocation = "equal",
    per_stratum: int | Sequence[int] | None = None,
    seed: int | np.random.Generator | None = 0,
    on_short: OnShort = "fail",
) -> np.ndarray:
    """Indices of ``m`` "neg" rows spread over the teacher-score strata, in ascending row order.

    The negatives' teacher scores are split into ``n_strata`` strata (see ``strata_of``), each
    stratum gets a quota (see ``stratum_quotas``) and its quota is drawn uniformly without
    replacement with the seeded generator.

    Empty and short strata (equal-width bins over a skewed score range are often empty): a
    stratum holding fewer negatives than its quota gives all it has, and its
    deficit is filled from the nearest strata that still have undrawn negatives: nearest by
    stratum-index distance, ties to the higher-score stratum, drawing uniformly within each.
    Short strata are filled one after another, highest-score stratum first. The result has
    exactly ``m`` rows whenever the pool has ``m`` negatives; with fewer: InsufficientCandidates,
    or with ``on_short="fill"`` all negatives.
    """
    neg = np.flatnonzero(pool.negatives())
    k = check_count(len(neg), m, on_short, qid=pool.qid)
    if k < m:
        return neg.astype(np.int64)
    strata = strata_of(pool.scores[neg], n_strata, binning)
    sizes = np.bincount(strata, minlength=n_strata)
    quotas = stratum_quotas(m, n_strata, per_stratum, allocation=allocation, sizes=sizes)
    rng = np.random.default_rng(seed)
    # Shuffle each stratum once: drawing its quota and later fills from the front of the
    # shuffled remainder are then both uniform.
    rest = [list(rng.permutation(neg[strata == s])) for s in range(n_strata)]
    chosen: list[int] = []
    deficits = np.zeros(n_strata, dtype=np.int64)
    for s in range(n_strata):
        take = min(int(quotas[s]), len(rest[s]))
        chosen += rest[s][:take]
        rest[s] = rest[s][take:]
        deficits[s] = quotas[s] - take
    for s in range(n_strata - 1, -1, -1):
        # Nearest first; at equal distance the higher stratum (s + d) precedes s - d.
        donors = [j for d in range(1, n_strata) for j in (s + d, s - d) if 0 <= j < n_strata]
        need = int(deficits[s])
        for j in donors:
            if need == 0:
                break
            take = min(need, len(rest[j]))
            chosen += rest[j][:take]
            rest[j] = rest[j][take:]
            need -= take
    return np.sort(np.asarray(chosen, dtype=np.int64))
