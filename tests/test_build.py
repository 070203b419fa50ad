"""The per-query assembly of the build stage, without Ray, on hand-made inputs of three queries
(test_build_stage.py runs the stage itself)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raykd.candidates.assemble import (
    SRC_EXAMPLE,
    SRC_POOL,
    SRC_QUERY,
    SRC_SCORE,
    assemble_group,
    assemble_query,
    query_seed,
    to_group,
)
from raykd.config import CandidatesSection
from raykd.data.schemas import EXAMPLES, POOL, QUERIES, SCORES
from raykd.errors import InputError

# (qid, kind, pid, pid2, mask_ratio, teacher score); texts are derived from the ids.
EXAMPLE_ROWS = [
    ("q1", "pos", "p1", None, None, 5.0),
    ("q1", "neg", "n1", None, None, 4.0),
    ("q1", "neg", "n2", None, None, -1.0),
    ("q1", "neg", "n3", None, None, 2.0),
    ("q1", "neg", "n4", None, None, 0.5),
    ("q1", "neg", "n5", None, None, -3.0),
    ("q1", "rein", "p1", "n1", None, 3.0),
    ("q1", "rein", "p1", "n3", None, 1.5),
    ("q1", "mask", "p1", None, 0.25, 4.5),
    ("q1", "mask", "p1", None, 0.5, 3.5),
    # q2 has two positives: one row each, sharing the negatives.
    ("q2", "pos", "pa", None, None, 2.0),
    ("q2", "pos", "pb", None, None, 1.0),
    ("q2", "neg", "x1", None, None, 0.0),
    ("q2", "neg", "x2", None, None, -2.0),
    ("q2", "neg", "x3", None, None, 1.5),
    ("q2", "mask", "pa", None, 0.25, 1.0),
    ("q2", "rein", "pb", "x3", None, 0.7),
    # q9 is not a training query: skipped and counted.
    ("q9", "pos", "z", None, None, 1.0),
    ("q9", "neg", "z1", None, None, 0.0),
]
QUERY_TEXT = {"q1": "alpha query", "q2": "beta query"}
# Random-source ranks are draw positions, not retriever ranks.
POOL_ROWS = [
    ("q1", "n1", 3, "bm25"),
    ("q1", "n2", 1, "bm25"),
    ("q1", "n3", 2, "bm25"),
    ("q1", "n4", 1, "random"),
    ("q1", "n5", 2, "random"),
    ("q2", "x1", 2, "bm25"),
    ("q2", "x2", 1, "random"),
    ("q2", "x3", 1, "bm25"),
    ("q9", "z1", 1, "bm25"),
]


def eid(qid, kind, pid, pid2, ratio):
    if kind == "rein":
        return f"{qid}|rein|{pid}|{pid2}"
    if kind == "mask":
        return f"{qid}|mask|{pid}|{ratio:.2f}"
    return f"{qid}|{kind}|{pid}"


def text(kind, pid, pid2, ratio):
    """P1, N3, R:p1+n1, M:p1@0.25 — short, readable candidate texts."""
    if kind == "rein":
        return f"R:{pid}+{pid2}"
    if kind == "mask":
        return f"M:{pid}@{ratio}"
    return pid.upper()


def examples_table(rows=EXAMPLE_ROWS):
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "qid": cols[0],
            "eid": [eid(*r[:5]) for r in rows],
            "kind": cols[1],
            "pid": cols[2],
            "pid2": cols[3],
            "mask_ratio": cols[4],
            "text": [text(*r[1:5]) for r in rows],
        },
        schema=EXAMPLES,
    )


def scores_table(rows=EXAMPLE_ROWS, override=None):
    override = override or {}
    eids = [eid(*r[:5]) for r in rows]
    table = pa.table(
        {
            "qid": [r[0] for r in rows],
            "eid": eids,
            "kind": [r[1] for r in rows],
            "score": [override.get(e, r[5]) for e, r in zip(eids, rows, strict=True)],
        },
        schema=SCORES,
    )
    # An ensemble member column the build must ignore.
    return table.append_column("score_m0", pa.array([99.0] * len(rows), pa.float32()))


def input_tables(examples=None, scores=None) -> dict[str, pa.Table]:
    return {
        "queries/train": pa.table(
            {"qid": list(QUERY_TEXT), "text": list(QUERY_TEXT.values())}, schema=QUERIES
        ),
        "examples": examples if examples is not None else examples_table(),
        "scores": scores if scores is not None else scores_table(),
        "pool": pa.table(
            {
                "qid": [r[0] for r in POOL_ROWS],
                "pid": [r[1] for r in POOL_ROWS],
                "rank": [r[2] for r in POOL_ROWS],
                "score": [0.0] * len(POOL_ROWS),
                "source": [r[3] for r in POOL_ROWS],
            },
            schema=POOL,
        ),
    }


SOURCES = {
    "queries/train": SRC_QUERY,
    "examples": SRC_EXAMPLE,
    "scores": SRC_SCORE,
    "pool": SRC_POOL,
}


def assemble_all(examples=None, scores=None, **candidates):
    """The stage's per-qid work without Ray: ``assemble_group`` on each qid's GROUP rows."""
    cand = CandidatesSection(**{"m": 2, **candidates})
    tables = input_tables(examples, scores)
    group = pa.concat_tables([to_group(tables[rel], src) for rel, src in SOURCES.items()])
    out = pa.concat_tables(
        assemble_group(group.filter(pc.equal(group["qid"], qid)), cand, 1.0, "examples", "scores")
        for qid in sorted(set(group["qid"].to_pylist()))
    )
    return {(r["qid"], r["pos"]): r for r in out.to_pylist() if not r["skipped"]}


def log_softmax_first(*scores):
    return scores[0] - math.log(sum(math.exp(s) for s in scores))


def check_row(row, cands, teacher, kinds, confidence):
    assert row["cands"] == cands
    assert row["teacher"] == pytest.approx(teacher)
    assert row["kinds"] == kinds
    assert row["confidence"] == pytest.approx(confidence, rel=1e-6)


# Confidence (ADAM Eq. 7) against the original negatives chosen; the arithmetic written out:
# q1/p1 with N1 (4.0), N3 (2.0): 5 - log(148.4132 + 54.5982 + 7.3891) = 5 - 5.3490 = -0.3490
C_Q1_TOPK = 5.0 - math.log(math.exp(5.0) + math.exp(4.0) + math.exp(2.0))
# q2/pa with X3 (1.5), X1 (0.0): 2 - log(7.3891 + 4.4817 + 1) = 2 - 2.5550 = -0.5550
C_PA_TOPK = 2.0 - math.log(math.exp(2.0) + math.exp(1.5) + math.exp(0.0))
# q2/pb with X3 (1.5), X1 (0.0): 1 - log(2.7183 + 4.4817 + 1) = 1 - 2.1041 = -1.1041
C_PB_TOPK = 1.0 - math.log(math.exp(1.0) + math.exp(1.5) + math.exp(0.0))


def test_confidence_constants_by_hand():
    assert C_Q1_TOPK == pytest.approx(-0.3490, abs=1e-4)
    assert C_PA_TOPK == pytest.approx(-0.5550, abs=1e-4)
    assert C_PB_TOPK == pytest.approx(-1.1041, abs=1e-4)


# --- the stage, per strategy -----------------------------------------------------------------


def test_topk_by_teacher():
    rows = assemble_all(strategy="topk")
    assert sorted(rows) == [("q1", "P1"), ("q2", "PA"), ("q2", "PB")]
    q1, pa_, pb = rows["q1", "P1"], rows["q2", "PA"], rows["q2", "PB"]
    assert q1["query"] == "alpha query" and pa_["query"] == "beta query"
    check_row(q1, ["N1", "N3"], [5.0, 4.0, 2.0], ["pos", "neg", "neg"], C_Q1_TOPK)
    check_row(pa_, ["X3", "X1"], [2.0, 1.5, 0.0], ["pos", "neg", "neg"], C_PA_TOPK)
    check_row(pb, ["X3", "X1"], [1.0, 1.5, 0.0], ["pos", "neg", "neg"], C_PB_TOPK)


def test_topk_by_retriever_ignores_random_source_ranks():
    rows = assemble_all(strategy="topk", topk_by="retriever")
    # n4 also has rank 1, but from the random source; x2 likewise.
    check_row(
        rows["q1", "P1"],
        ["N2", "N3"],
        [5.0, -1.0, 2.0],
        ["pos", "neg", "neg"],
        log_softmax_first(5.0, -1.0, 2.0),
    )
    assert rows["q2", "PA"]["cands"] == ["X3", "X1"]


def test_dark_set_is_negatives_their_reinforced_twins_and_masked_positives():
    rows = assemble_all(strategy="dark", n_masked=None, dark_base="topk")
    check_row(
        rows["q1", "P1"],
        ["N1", "N3", "R:p1+n1", "R:p1+n3", "M:p1@0.25", "M:p1@0.5"],
        [5.0, 4.0, 2.0, 3.0, 1.5, 4.5, 3.5],
        ["pos", "neg", "neg", "rein", "rein", "mask", "mask"],
        C_Q1_TOPK,  # rein and mask rows are not original negatives
    )
    # pa has a masked positive and no reinforced one; pb the reverse (built from x3).
    check_row(
        rows["q2", "PA"],
        ["X3", "X1", "M:pa@0.25"],
        [2.0, 1.5, 0.0, 1.0],
        ["pos", "neg", "neg", "mask"],
        C_PA_TOPK,
    )
    check_row(
        rows["q2", "PB"],
        ["X3", "X1", "R:pb+x3"],
        [1.0, 1.5, 0.0, 0.7],
        ["pos", "neg", "neg", "rein"],
        C_PB_TOPK,
    )


def test_random_set_follows_the_per_query_seed():
    rows = assemble_all(strategy="random", seed=3)
    # The negatives in eid order, drawn with the query's seed, kept in that order.
    for qid, pos, negs, pos_score, neg_scores in (
        ("q1", "P1", ["N1", "N2", "N3", "N4", "N5"], 5.0, [4.0, -1.0, 2.0, 0.5, -3.0]),
        ("q2", "PA", ["X1", "X2", "X3"], 2.0, [0.0, -2.0, 1.5]),
    ):
        pick = np.sort(np.random.default_rng(query_seed(3, qid)).choice(len(negs), 2, False))
        s = [neg_scores[i] for i in pick]
        check_row(
            rows[qid, pos],
            [negs[i] for i in pick],
            [pos_score, *s],
            ["pos", "neg", "neg"],
            log_softmax_first(pos_score, *s),
        )
    # One seed per query: both positives of q2 share the draw.
    assert rows["q2", "PA"]["cands"] == rows["q2", "PB"]["cands"]


def test_stratified_covers_both_strata():
    rows = assemble_all(strategy="stratified", n_strata=2)
    # q1 negatives by score: {N5 -3, N2 -1, N4 0.5} | {N3 2, N1 4}: one from each, in eid order.
    cands = rows["q1", "P1"]["cands"]
    assert cands == sorted(cands)
    (low,) = set(cands) & {"N2", "N4", "N5"}
    (high,) = set(cands) & {"N1", "N3"}
    # q2: {X2 -2, X1 0} | {X3 1.5}.
    for pos in ("PA", "PB"):
        assert rows["q2", pos]["cands"][0] in ("X1", "X2")
        assert rows["q2", pos]["cands"][1] == "X3"
    score = {"N1": 4.0, "N2": -1.0, "N3": 2.0, "N4": 0.5, "N5": -3.0}
    check_row(
        rows["q1", "P1"],
        cands,
        [5.0, score[cands[0]], score[cands[1]]],
        ["pos", "neg", "neg"],
        log_softmax_first(5.0, score[low], score[high]),
    )


@pytest.mark.parametrize(
    "strategy, q1_cands, q1_teacher",
    [
        # margin 1.5: q1 drops N1 (4.0 > 5 - 1.5), so topk takes N3, N4.
        ("topk", ["N3", "N4"], [5.0, 2.0, 0.5]),
        # ... and the dark set loses N1's reinforced twin with it.
        ("dark", ["N3", "N4", "R:p1+n3", "M:p1@0.25", "M:p1@0.5"], [5.0, 2.0, 0.5, 1.5, 4.5, 3.5]),
    ],
)
def test_margin_filter_composes_with_strategy(strategy, q1_cands, q1_teacher):
    rows = assemble_all(
        strategy=strategy, margin=1.5, on_short="fill", n_masked=None, dark_base="topk"
    )
    q1 = rows["q1", "P1"]
    assert q1["cands"] == q1_cands and q1["teacher"] == pytest.approx(q1_teacher)
    assert q1["confidence"] == pytest.approx(log_softmax_first(5.0, 2.0, 0.5), rel=1e-6)
    # pa keeps X1, X2 (X3 1.5 > 2 - 1.5); pb keeps only X2 (threshold -0.5): short, filled.
    assert rows["q2", "PA"]["cands"][:2] == ["X1", "X2"]
    assert [
        c
        for c, k in zip(rows["q2", "PB"]["cands"], rows["q2", "PB"]["kinds"][1:], strict=True)
        if k == "neg"
    ] == ["X2"]
    assert [r["short"] for r in rows.values()] == [False, False, True]


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "stratified"])
def test_seed_changes_the_sets(strategy):
    a = assemble_all(strategy=strategy, n_strata=2, seed=0)
    b = assemble_all(strategy=strategy, n_strata=2, seed=1)
    assert a.keys() == b.keys()
    assert any(a[k]["cands"] != b[k]["cands"] for k in a)


# --- errors ----------------------------------------------------------------------------------


def test_short_pool_names_the_query():
    with pytest.raises(InputError, match=r"query 'q2' \(positive 'pa'\).*asked for 4 negatives"):
        assemble_all(strategy="topk", m=4)


def test_non_finite_score_names_query_and_example():
    scores = scores_table(override={"q1|neg|n2": float("nan")})
    with pytest.raises(InputError, match=r"non-finite teacher score nan for 'q1\|neg\|n2'.*'q1'"):
        assemble_all(scores=scores, strategy="topk")


# --- the pure assembly, without Ray ----------------------------------------------------------


def _query_inputs(qid, rows=EXAMPLE_ROWS, override=None):
    ex = examples_table(rows)
    sc = scores_table(rows, override)
    return ex.filter(pc.equal(ex["qid"], qid)), sc.filter(pc.equal(sc["qid"], qid))


def test_assemble_query_is_independent_of_row_order():
    ex, sc = _query_inputs("q1")
    cand = CandidatesSection(strategy="stratified", m=2, n_strata=2, seed=5)
    ranks = {"n1": 3, "n2": 1, "n3": 2}
    a = assemble_query("q1", "alpha query", ex, sc, ranks, cand, 1.0)
    perm = np.random.default_rng(0).permutation(ex.num_rows)
    b = assemble_query("q1", "alpha query", ex.take(perm), sc.take(perm[::-1]), ranks, cand, 1.0)
    assert [(r.cands, r.teacher) for r in a] == [(r.cands, r.teacher) for r in b]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ex, sc: (ex, sc.slice(1)), r"no teacher score for 'q1\|pos\|p1'"),
        (lambda ex, sc: (ex.slice(1), sc), r"score for unknown example 'q1\|pos\|p1'"),
        (lambda ex, sc: (pa.concat_tables([ex, ex.slice(0, 1)]), sc), "duplicate example"),
        (
            lambda ex, sc: (ex, sc.set_column(2, "kind", pa.array(["neg"] * sc.num_rows))),
            r"'q1\|pos\|p1' is a 'pos' example but scored as 'neg'",
        ),
        (
            # Drop n1's neg example (and its score): its reinforced twin has no parent.
            lambda ex, sc: (
                ex.filter(pc.not_equal(ex["eid"], "q1|neg|n1")),
                sc.filter(pc.not_equal(sc["eid"], "q1|neg|n1")),
            ),
            r"'q1\|rein\|p1\|n1' is built from negative 'n1', which has no 'neg' example",
        ),
    ],
)
def test_assemble_query_rejects_inconsistent_inputs(mutate, message):
    ex, sc = mutate(*_query_inputs("q1"))
    with pytest.raises(InputError, match=message):
        assemble_query(
            "q1", "alpha query", ex, sc, {}, CandidatesSection(strategy="dark", m=2), 1.0
        )


def test_query_seed_is_stable_and_keyed_by_seed_and_qid():
    assert query_seed(0, "q1") == query_seed(0, "q1")
    assert len({query_seed(0, "q1"), query_seed(1, "q1"), query_seed(0, "q2")}) == 3
