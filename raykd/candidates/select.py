"""One entry point for every candidate-set strategy."""

from __future__ import annotations

import numpy as np

from raykd.candidates.dark import dark_candidates
from raykd.candidates.margin import margin_keep
from raykd.candidates.pool import InsufficientCandidates, QueryPool
from raykd.candidates.random_negatives import random_negatives
from raykd.candidates.stratified import stratified
from raykd.candidates.topk import topk
from raykd.config import CandidatesSection

__all__ = ["STRATEGIES", "InsufficientCandidates", "select_candidates"]

STRATEGIES: tuple[str, ...] = ("random", "topk", "stratified", "dark")


def select_candidates(pool: QueryPool, candidates: CandidatesSection, seed: int) -> np.ndarray:
    """Indices into ``pool`` of the candidates ``candidates.strategy`` picks (never a positive).

    Inputs: ``pool``, one query's rows (positives, negatives, dark examples); ``candidates``, the
    job's section, whole; ``seed``, this query's seed (``query_seed``). Returns int indices into
    ``pool``, shape (k,): random / topk / stratified give k = m "neg" rows (see each function for
    the order); dark gives k = 2m + n_masked, the ``m`` negatives ``dark_base`` picks among those
    with a reinforced twin (among all when fewer than ``m`` have one), their twins, then the
    masked positives (all, or ``n_masked``): see ``dark_candidates``. The default base, random,
    is ADAM's: "We randomly select m hard negatives" (Tao et al. 2024, §4.3); the hard negatives
    are those augment twinned (``augment.n_rein``, ``augment.rein_pick``).

    ``margin`` (not None) first drops negatives by the teacher-margin filter; indices still refer
    to the unfiltered pool. When too few negatives (or masked positives) remain:
    ``on_short="fail"`` raises InsufficientCandidates; ``on_short="fill"`` returns all that
    exist, so the set is smaller than asked and the caller sees it in the length.
    """
    c = candidates
    m, margin, on_short = c.m, c.margin, c.on_short
    keep = np.arange(len(pool)) if margin is None else np.flatnonzero(margin_keep(pool, margin))
    sub = pool if margin is None else pool.subset(keep)

    def negatives(name: str, sub: QueryPool) -> np.ndarray:
        if name == "random":
            return random_negatives(sub, m, seed, on_short=on_short)
        if name == "topk":
            return topk(sub, m, by=c.topk_by, on_short=on_short)
        if name == "stratified":
            return stratified(
                sub,
                m,
                c.n_strata,
                binning=c.binning,
                allocation=c.allocation,
                per_stratum=c.per_stratum,
                seed=seed,
                on_short=on_short,
            )
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")

    if c.strategy == "dark":
        # ADAM's originals are the negatives the reinforced twins were built from (augment's
        # top n_rein): the base strategy chooses among them when there are enough.
        twinned = np.isin(sub.ids, sub.parents[sub.kind_mask("rein")]) & sub.kind_mask("neg")
        if twinned.sum() >= m:
            among = np.flatnonzero(twinned | ~sub.kind_mask("neg"))
            base = among[negatives(c.dark_base, sub.subset(among))]
        else:
            base = negatives(c.dark_base, sub)
        # The masked-positive draw gets its own stream so it does not shift with the base draw.
        picked = dark_candidates(
            sub,
            m,
            base=base,
            n_masked=c.n_masked,
            seed=np.random.default_rng([seed, 1]),
            on_short=on_short,
        )
    else:
        picked = negatives(c.strategy, sub)
    return keep[picked]
