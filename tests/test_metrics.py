import math
import random

import pytest

from raykd.evaluation.metrics import DEFAULT_MEASURES, evaluate, per_query

# q1: relevant d1 (grade 1) at rank 3 and d2 (grade 2) at rank 5, d3 judged non-relevant at 4.
# q2: its only relevant document at rank 1.
# q3: judged, missing from the run. q4: judged, in the run with no results.
# q5: no relevant document, so it does not count. q6: grade 1 at rank 1, grade 2 at rank 2.
# q9: not in the qrels, ignored.
QRELS = {
    "q1": {"d1": 1, "d2": 2, "d3": 0},
    "q2": {"d5": 1},
    "q3": {"d7": 1},
    "q4": {"d8": 1},
    "q5": {"d9": 0},
    "q6": {"a": 1, "b": 2},
}
RUN = {
    "q1": {"x1": 0.9, "x2": 0.8, "d1": 0.7, "d3": 0.6, "d2": 0.5},
    "q2": {"d5": 0.95, "y": 0.3},
    "q4": {},
    "q5": {"d9": 1.0},
    "q6": {"a": 0.9, "b": 0.8},
    "q9": {"d5": 1.0},
}

# nDCG with linear gains: sum(rel / log2(rank + 1)) over the ideal ordering's sum.
NDCG_Q1 = (1 / math.log2(3 + 1) + 0 / math.log2(4 + 1) + 2 / math.log2(5 + 1)) / (
    2 / math.log2(1 + 1) + 1 / math.log2(2 + 1)
)
NDCG_Q6 = (1 / math.log2(1 + 1) + 2 / math.log2(2 + 1)) / (
    2 / math.log2(1 + 1) + 1 / math.log2(2 + 1)
)


def test_hand_computed_values():
    got = evaluate(QRELS, RUN, ["RR@10", "R@2", "R@50", "nDCG@10"])
    # Five queries count (q1, q2, q3, q4, q6); q3 and q4 score 0.
    assert got == pytest.approx(
        {
            "RR@10": (1 / 3 + 1 + 0 + 0 + 1) / 5,
            "R@2": (0 / 2 + 1 / 1 + 0 + 0 + 2 / 2) / 5,
            "R@50": (2 / 2 + 1 / 1 + 0 + 0 + 2 / 2) / 5,
            "nDCG@10": (NDCG_Q1 + 1 + 0 + 0 + NDCG_Q6) / 5,
        }
    )
    assert list(got) == ["RR@10", "R@2", "R@50", "nDCG@10"]


def test_per_query_covers_judged_queries_only():
    table = per_query(QRELS, RUN, ["RR@10", "nDCG@10"])
    assert sorted(table) == ["q1", "q2", "q3", "q4", "q6"]
    assert table["q1"] == pytest.approx({"RR@10": 1 / 3, "nDCG@10": NDCG_Q1})
    assert table["q3"] == table["q4"] == {"RR@10": 0.0, "nDCG@10": 0.0}


def test_rel_threshold_two_changes_binary_measures_only():
    got = evaluate(QRELS, RUN, ["RR@10", "R@2", "nDCG@10"], rel_threshold=2)
    # Only q1 and q6 have a grade-2 document; q1's is at rank 5, q6's at rank 2.
    assert got == pytest.approx(
        {
            "RR@10": (1 / 5 + 1 / 2) / 2,
            "R@2": (0 / 1 + 1 / 1) / 2,
            "nDCG@10": (NDCG_Q1 + NDCG_Q6) / 2,  # still graded
        }
    )


def test_default_measures_and_name_normalisation():
    assert set(evaluate(QRELS, RUN)) == {"RR@10", "R@50", "R@100", "R@1000", "nDCG@10"}
    assert len(DEFAULT_MEASURES) == 5
    assert evaluate(QRELS, RUN, ["MRR@10"]) == evaluate(QRELS, RUN, ["RR@10"])
    # A measure naming its own rel keeps it whatever the threshold.
    explicit = evaluate(QRELS, RUN, ["RR(rel=2)@10"])
    assert explicit == pytest.approx({"RR(rel=2)@10": (1 / 5 + 0 + 0 + 0 + 1 / 2) / 5})


def test_nothing_to_evaluate_is_an_error():
    with pytest.raises(ValueError, match="rel >= 1"):
        evaluate({"q": {"d": 0}}, {"q": {"d": 1.0}})
    with pytest.raises(ValueError, match="rel_threshold"):
        evaluate(QRELS, RUN, rel_threshold=0)
    assert evaluate(QRELS, {}, ["RR@10"]) == {"RR@10": 0.0}


def reference_mrr10(qrels, run):
    """MS MARCO MRR@10: mean over every qrels query; unranked queries count 0."""
    total = 0.0
    for qid, docs in qrels.items():
        ranking = sorted(run.get(qid, {}).items(), key=lambda kv: -kv[1])[:10]
        for rank, (docno, _) in enumerate(ranking, start=1):
            if docs.get(docno, 0) >= 1:
                total += 1 / rank
                break
    return total / len(qrels)


@pytest.mark.parametrize("seed", range(5))
def test_mrr10_matches_reference_on_random_runs(seed):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(60):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([1, 2]) for d in rng.sample(docs, rng.randint(1, 3))}
        kind = rng.random()
        if kind < 0.15:
            continue  # missing from the run
        retrieved = rng.sample(docs, 0 if kind < 0.25 else rng.randint(1, 30))
        scores = rng.sample(range(1000), len(retrieved))  # distinct: no tie-breaking ambiguity
        run[qid] = dict(zip(retrieved, map(float, scores), strict=True))
    run["not-judged"] = {"d0": 1.0}
    assert evaluate(qrels, run, ["RR@10"])["RR@10"] == pytest.approx(reference_mrr10(qrels, run))
