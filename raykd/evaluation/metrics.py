"""Retrieval metrics over ir_measures, with MS MARCO averaging.

Which queries count: every query whose qrels hold at least one document with
``rel >= rel_threshold``. Such a query with no results in the run scores 0 on every measure
(MS MARCO MRR@10 divides by all dev queries, not only the ranked ones; ir_measures' own
averaging has varied on this across versions, so it is done here). Queries in the run but not in
the qrels are ignored, as are qrels queries with nothing relevant (their recall is 0/0).

``rel_threshold`` is applied to every measure that takes ir_measures' ``rel`` parameter (RR, R,
P, AP, ...) unless the measure names its own; nDCG has none and stays graded, as TREC DL wants.
Result keys are the measure names as asked (normalised by ir_measures, so "MRR@10" and "RR@10"
both give "RR@10"), independent of the threshold, so metrics files compare across settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ir_measures
from ir_measures.measures import Measure

from raykd.data.trec import Qrels, Run

DEFAULT_MEASURES: tuple[str, ...] = ("RR@10", "R@50", "R@100", "R@1000", "nDCG@10")

MeasureLike = str | Measure


def _resolve(measures: Sequence[MeasureLike], rel_threshold: int) -> dict[str, Measure]:
    """Map each result key to the measure computed for it."""
    if rel_threshold < 1:
        raise ValueError(f"rel_threshold must be >= 1, got {rel_threshold}")
    resolved: dict[str, Measure] = {}
    for m in measures:
        measure = ir_measures.parse_measure(m) if isinstance(m, str) else m
        key = str(measure)
        if "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=rel_threshold)
        resolved[key] = measure
    if not resolved:
        raise ValueError("no measures given")
    return resolved


def per_query(
    qrels: Qrels,
    run: Run,
    measures: Sequence[MeasureLike] = DEFAULT_MEASURES,
    rel_threshold: int = 1,
) -> dict[str, dict[str, float]]:
    """Per-query values ``{qid: {key: value}}`` for every query that counts (see module doc)."""
    resolved = _resolve(measures, rel_threshold)
    judged = sorted(
        qid for qid, docs in qrels.items() if any(r >= rel_threshold for r in docs.values())
    )
    table = {qid: dict.fromkeys(resolved, 0.0) for qid in judged}
    ranked = {qid: run[qid] for qid in judged if run.get(qid)}
    if not ranked:
        return table
    keys_of: dict[Measure, list[str]] = {}
    for key, measure in resolved.items():
        keys_of.setdefault(measure, []).append(key)
    for result in ir_measures.iter_calc(list(keys_of), {qid: qrels[qid] for qid in judged}, ranked):
        for key in keys_of[result.measure]:
            table[result.query_id][key] = float(result.value)
    return table


def evaluate(
    qrels: Qrels,
    run: Run,
    measures: Sequence[MeasureLike] = DEFAULT_MEASURES,
    rel_threshold: int = 1,
) -> dict[str, float]:
    """Mean of each measure over the queries that count (see module doc), keyed as asked."""
    table = per_query(qrels, run, measures, rel_threshold)
    if not table:
        raise ValueError(f"no query in the qrels has a document with rel >= {rel_threshold}")
    keys = next(iter(table.values())).keys()
    return {key: math.fsum(row[key] for row in table.values()) / len(table) for key in keys}
