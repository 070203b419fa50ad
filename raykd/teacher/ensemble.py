"""A weighted ensemble of teachers, combined per query after normalisation.

``score = sum_i w_i * normalize_q(s_i)`` where ``normalize_q`` is z-score (default) or min-max
with the statistics of the query's positives and pool negatives (``raykd.teacher.normalize``):
dark examples are normalised with them but do not move them, so adding dark examples leaves the
original rows' targets as they were. Each member's raw score is kept
in the scores table as ``score_<i>_<kind>`` (``i`` = the member's position in
``teacher.members``, from 0; ``kind`` = its kind), e.g. ``score_0_bm25``, ``score_1_bi_encoder``,
so reports can show each teacher; ``score`` holds the combination.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from raykd.data.acero import join
from raykd.teacher.base import ScorerSpec, TeacherEnv, build_teacher, register_teacher
from raykd.teacher.normalize import Method, normalize_per_query

# Kinds whose scores define a query's normalisation: the positives and the pool negatives (an
# eval rerank pool has none of these kinds, so all its rows count).
REFERENCE_KINDS = ("pos", "neg")


def member_column(index: int, kind: str) -> str:
    """The scores-table column holding member ``index``'s raw score."""
    return f"score_{index}_{kind}"


def combine(
    member_scores: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | Sequence[float],
    qids: np.ndarray,
    method: Method = "zscore",
    ref: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted sum of the members' per-query-normalised scores (float32).

    ``member_scores`` maps a member name to its raw scores [N], aligned with ``qids`` [N]; every
    query's rows must all be present. ``ref`` (bool [N]) marks the rows whose statistics define
    each query's normalisation (default all; see ``normalize_per_query``). ``weights`` is keyed
    like ``member_scores`` or given in its order.
    """
    if not member_scores:
        raise ValueError("an ensemble needs at least one member")
    names = list(member_scores)
    if isinstance(weights, Mapping):
        if set(weights) != set(names):
            raise ValueError(f"weights {sorted(weights)} do not name the members {sorted(names)}")
        w = [float(weights[n]) for n in names]
    else:
        w = [float(x) for x in weights]
        if len(w) != len(names):
            raise ValueError(f"{len(w)} weights for {len(names)} members")
    total = np.zeros(len(qids), dtype=np.float64)
    for name, weight in zip(names, w, strict=True):
        try:
            total += weight * normalize_per_query(member_scores[name], qids, method, ref)
        except ValueError as err:
            raise ValueError(f"member {name!r}: {err}") from None
    return total.astype(np.float32)


class EnsembleTeacher:
    """The members' scorers and their per-query combination.

    ``raykd.on_ray.scoring`` scores a shard, which holds every row of its queries, with each
    member in turn and hands the members' tables to ``combine_tables``.
    """

    def __init__(self, members: list[tuple[str, float, ScorerSpec]], method: Method) -> None:
        self.members = members  # (scores-table column, weight, scorer)
        self.method = method
        # The stage adds the "score_" prefix: score_<i>_<kind>.
        self.columns = tuple(name.removeprefix("score_") for name, _, _ in members)

    def combine_tables(self, tables: Sequence[pa.Table]) -> pa.Table:
        """One table of ``qid, eid, kind, score`` + each member's raw score column from the
        members' outputs (``qid, eid, kind, score`` [N] each, in ``members`` order, the same
        (qid, eid) rows in any order)."""
        n = tables[0].num_rows
        joined: pa.Table | None = None
        for (name, _, _), table in zip(self.members, tables, strict=True):
            if table.num_rows != n:
                raise RuntimeError(f"ensemble member {name}: {table.num_rows} rows for {n}")
            table = table.select(["qid", "eid", "kind", "score"])
            table = table.rename_columns(["qid", "eid", "kind", name])
            if joined is None:
                joined = table
            else:
                joined = join(joined, table.drop_columns(["kind"]), ["qid", "eid"])
                if joined.num_rows != n:
                    raise RuntimeError(f"ensemble member {name}: rows do not match by (qid, eid)")
        assert joined is not None  # members is non-empty (checked by the builder)
        qids = joined.column("qid").to_numpy(zero_copy_only=False)
        kinds = joined.column("kind").to_numpy(zero_copy_only=False)
        combined = combine(
            {name: joined.column(name).to_numpy() for name, _, _ in self.members},
            [w for _, w, _ in self.members],
            qids,
            self.method,
            ref=np.isin(kinds, REFERENCE_KINDS),
        )
        table = joined.select(["qid", "eid", "kind"]).append_column(
            "score", pa.array(combined, type=pa.float32())
        )
        for name, _, _ in self.members:
            table = table.append_column(name, joined.column(name).cast(pa.float32()))
        return table


@register_teacher("ensemble")
def build_ensemble(cfg, env: TeacherEnv) -> EnsembleTeacher:
    """The ensemble teacher of ``cfg.members``: each member's raw score in ``score_<i>_<kind>``,
    normalised per query over the positives and pool negatives, weighted and summed.
    """
    if not getattr(cfg, "members", None):
        raise ValueError("teacher.kind 'ensemble' needs teacher.members")
    members = []
    for i, m in enumerate(cfg.members):
        scorer = build_teacher(m, env)
        assert isinstance(scorer, ScorerSpec)  # a member's kind is never "ensemble"
        members.append((member_column(i, m.kind), m.weight, scorer))
    return EnsembleTeacher(members, cfg.normalization)
