import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raykd.candidates.confidence import confidence, pool_confidence
from raykd.candidates.dark import dark_candidates
from raykd.candidates.margin import margin_filter, margin_keep
from raykd.candidates.pool import InsufficientCandidates, QueryPool
from raykd.candidates.random_negatives import random_negatives
from raykd.candidates.select import STRATEGIES
from raykd.candidates.stratified import strata_of, stratified, stratum_quotas
from raykd.candidates.topk import topk
from tests.conftest import pick


def neg_pool(scores, ranks=None, pos_score=100.0):
    n = len(scores)
    return QueryPool(
        ids=[f"n{i}" for i in range(n)] + ["p"],
        scores=list(scores) + [pos_score],
        kinds=["neg"] * n + ["pos"],
        ranks=None if ranks is None else list(ranks) + [-1],
        qid="q1",
    )


# --- QueryPool -----------------------------------------------------------------------------


def test_pool_rejects_non_finite_score_naming_the_id():
    with pytest.raises(ValueError, match="'b'"):
        QueryPool(ids=["a", "b"], scores=[1.0, np.nan], kinds=["pos", "neg"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ids=["a", "b"], scores=[1.0], kinds=["pos", "neg"]), "scores has 1 rows"),
        (dict(ids=["a", "a"], scores=[1.0, 2.0], kinds=["pos", "neg"]), "duplicate id 'a'"),
        (dict(ids=["a", "b"], scores=[1.0, 2.0], kinds=["pos", "hard"]), "unknown kind 'hard'"),
        (dict(ids=["a", "b"], scores=[1.0, 2.0], kinds=["pos", "rein"]), "'b' has no parent"),
        (dict(ids=["a"], scores=[np.inf], kinds=["pos"], qid="q7"), "query 'q7'"),
    ],
)
def test_pool_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QueryPool(**kwargs)


def test_pool_is_read_only_and_masks_kinds():
    pool = QueryPool(ids=["a", "b", "c"], scores=np.float32([1, 2, 3]), kinds=["pos", "neg", "neg"])
    assert pool.scores.dtype == np.float64
    assert pool.ranks.tolist() == [-1, -1, -1]
    assert pool.negatives().tolist() == [False, True, True]
    assert pool.positives().tolist() == [True, False, False]
    with pytest.raises(ValueError):
        pool.scores[0] = 5.0
    assert pool.subset(np.array([2, 0])).ids.tolist() == ["c", "a"]


# --- random / topk ---------------------------------------------------------------------------


def test_random_negatives_uniform_and_seeded():
    pool = neg_pool(np.arange(10.0))
    a = random_negatives(pool, 4, 3)
    assert a.tolist() == random_negatives(pool, 4, 3).tolist()
    assert len(set(a.tolist())) == 4 and (pool.kinds[a] == "neg").all()
    counts = np.zeros(10)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts[random_negatives(pool, 3, rng)] += 1
    # Each negative is drawn with probability 3/10: 600 expected, sd ~20.
    assert np.abs(counts - 600).max() < 100


def test_topk_by_teacher_breaks_ties_by_index():
    pool = neg_pool([3.0, 5.0, 5.0, 1.0, 4.0])
    assert topk(pool, 3).tolist() == [1, 2, 4]
    assert topk(pool, 5).tolist() == [1, 2, 4, 0, 3]


def test_topk_by_retriever_puts_unranked_last():
    pool = neg_pool([0.0] * 5, ranks=[3, -1, 1, -1, 2])
    assert topk(pool, 5, by="retriever").tolist() == [2, 4, 0, 1, 3]
    with pytest.raises(ValueError, match="by must be"):
        topk(pool, 2, by="bm25")


# --- stratified ------------------------------------------------------------------------------


def test_quantile_strata_by_rank():
    assert strata_of(np.arange(10.0), 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # Tied scores still split evenly, ties by position.
    assert strata_of(np.zeros(4), 2).tolist() == [0, 0, 1, 1]


def test_stratified_quantile_picks_one_per_stratum():
    scores = np.array([0.9, -3.0, 7.5, 2.2, 4.1, -0.5, 6.0, 1.3, 3.3, 5.2])
    # Ascending: -3.0 -0.5 | 0.9 1.3 | 2.2 3.3 | 4.1 5.2 | 6.0 7.5
    pairs = [{1, 5}, {0, 7}, {3, 8}, {4, 9}, {6, 2}]
    pool = neg_pool(scores)
    for seed in range(20):
        got = set(stratified(pool, 5, 5, binning="quantile", seed=seed).tolist())
        assert len(got) == 5
        assert all(len(got & pair) == 1 for pair in pairs)


def test_equal_width_skewed_fills_from_nearest_higher_stratum():
    # Range [0, 10], width 2: stratum 0 = {0, .5, 1}, 1 = {2.5}, 2 = {}, 3 = {}, 4 = {8.5..10}.
    scores = np.array([0.0, 0.5, 1.0, 2.5, 8.5, 9.0, 9.5, 10.0])
    pool = neg_pool(scores)
    assert strata_of(scores, 5, "equal_width").tolist() == [0, 0, 0, 1, 4, 4, 4, 4]

    def per_stratum(idx):
        return np.bincount(strata_of(scores, 5, "equal_width")[idx], minlength=5).tolist()

    for seed in range(10):
        # m=5, quotas [1,1,1,1,1]. Stratum 3 (filled first) is 1 from 4 and 2; 4 has 3 left.
        # Stratum 2: distance 1 is 3 (empty) and 1 (used up); distance 2 ties 4 vs 0 -> 4.
        assert per_stratum(stratified(pool, 5, 5, binning="equal_width", seed=seed)) == [
            1,
            1,
            0,
            0,
            3,
        ]
        # m=7, quotas [1,1,1,2,2]. Stratum 3 takes its 2 from 4 (2 left after its quota),
        # then stratum 2 finds 3 empty, 1 and 4 used up, and takes 1 from 0.
        assert per_stratum(stratified(pool, 7, 5, binning="equal_width", seed=seed)) == [
            2,
            1,
            0,
            0,
            4,
        ]


def test_equal_width_all_equal_scores_is_one_stratum():
    assert strata_of(np.ones(4), 3, "equal_width").tolist() == [0, 0, 0, 0]
    assert len(stratified(neg_pool(np.ones(4)), 3, 3, binning="equal_width")) == 3


def test_stratum_quotas():
    assert stratum_quotas(7, 5, None).tolist() == [1, 1, 1, 2, 2]
    assert stratum_quotas(10, 5, None).tolist() == [2] * 5
    assert stratum_quotas(10, 5, 2).tolist() == [2] * 5
    assert stratum_quotas(6, 3, [1, 2, 3]).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="must sum to m=7"):
        stratum_quotas(7, 5, 2)


def test_proportional_quotas_by_largest_remainder():
    # 10 * [6, 3, 1] / 10 = [6, 3, 1] exactly; 4 * [6, 3, 1] / 10 = [2.4, 1.2, 0.4] -> 2, 1, +1 to
    # the largest remainder (0.4 at strata 0 and 2: the higher one wins).
    sizes = [6, 3, 1]
    assert stratum_quotas(10, 3, None, allocation="proportional", sizes=sizes).tolist() == [6, 3, 1]
    assert stratum_quotas(4, 3, None, allocation="proportional", sizes=sizes).tolist() == [2, 1, 1]
    # An empty stratum gets no quota.
    assert stratum_quotas(3, 3, None, allocation="proportional", sizes=[0, 4, 2]).tolist() == [
        0,
        2,
        1,
    ]


def inclusion_probabilities(scores, m, n_strata, binning, allocation, seeds=4000):
    pool = neg_pool(scores)
    counts = np.zeros(len(scores))
    for seed in range(seeds):
        got = stratified(pool, m, n_strata, binning=binning, allocation=allocation, seed=seed)
        counts[got] += 1
    return counts / seeds


def test_inclusion_probabilities_per_binning_mode():
    """Jang et al.: strata should cover the whole score spectrum. A skewed pool, 40 low-scoring
    negatives (random draws) and 5 spread over the upper range, shows what each mode does."""
    scores = np.concatenate([np.linspace(0.0, 0.19, 40), [0.3, 0.5, 0.7, 0.9, 1.0]])
    m, n = 5, len(scores)
    # Quantile strata of 9, proportional quotas [1]*5: every negative at m / N = 1/9, exactly
    # the inclusion probability of uniform random sampling.
    quantile = inclusion_probabilities(scores, m, 5, "quantile", "proportional")
    np.testing.assert_allclose(quantile, m / n, atol=0.02)
    # Width-0.2 bins hold [40, 1, 1, 1, 2] negatives; equal quotas [1]*5 take each singleton
    # always, one of the top two (1/2 each) and one of the 40 (1/40 each).
    equal = inclusion_probabilities(scores, m, 5, "equal_width", "equal")
    np.testing.assert_allclose(equal[40:43], 1.0)
    np.testing.assert_allclose(equal[43:], 0.5, atol=0.03)
    np.testing.assert_allclose(equal[:40], 1 / 40, atol=0.01)
    # The same bins with proportional quotas: 5 * [40, 1, 1, 1, 2] / 45 -> [5, 0, 0, 0, 0], so all
    # from the low tail (5/40 each) and never a hard negative.
    ew_prop = inclusion_probabilities(scores, m, 5, "equal_width", "proportional")
    np.testing.assert_allclose(ew_prop[:40], 5 / 40, atol=0.02)
    assert not ew_prop[40:].any()


def test_stratified_explicit_quotas():
    pool = neg_pool(np.arange(10.0))
    got = stratified(pool, 4, 2, per_stratum=[0, 4], seed=1)
    assert len(got) == 4 and (pool.scores[got] >= 5).all()


# --- dark ------------------------------------------------------------------------------------


def dark_pool():
    return QueryPool(
        ids=["p", "n0", "n1", "n2", "r2", "r0", "mA", "mB", "mC"],
        scores=[9.0, 1.0, 3.0, 2.0, 4.0, 5.0, 8.0, 7.0, 6.0],
        kinds=["pos", "neg", "neg", "neg", "rein", "rein", "mask", "mask", "mask"],
        parents=["", "", "", "", "n2", "n0", "", "", ""],
        mask_ratios=[np.nan] * 6 + [0.15, 0.25, 0.35],
    )


def test_dark_layout_pairs_rein_with_chosen_negatives():
    pool = dark_pool()
    # Top-2 by teacher: n1 (3.0), n2 (2.0); only n2 has a twin (r2); then all masks.
    assert dark_candidates(pool, 2).tolist() == [2, 3, 4, 6, 7, 8]
    # Base given: n0 then n2, twins in that order.
    assert dark_candidates(pool, 2, base=np.array([1, 3])).tolist() == [1, 3, 5, 4, 6, 7, 8]
    two = dark_candidates(pool, 2, n_masked=2, seed=4)
    assert two[:3].tolist() == [2, 3, 4] and set(two[3:].tolist()) < {6, 7, 8}
    with pytest.raises(InsufficientCandidates, match="masked positives"):
        dark_candidates(pool, 2, n_masked=4)
    assert dark_candidates(pool, 2, n_masked=4, on_short="fill")[3:].tolist() == [6, 7, 8]
    with pytest.raises(ValueError, match="base must index"):
        dark_candidates(pool, 2, base=np.array([0, 1]))


def test_dark_base_chooses_among_twinned_negatives():
    pool = dark_pool()
    # n0 and n2 have twins: top-2 by teacher among them is n2 (2.0), n0 (1.0), not n1 (3.0).
    assert pick(pool, "dark", 2, dark_base="topk").tolist() == [3, 1, 4, 5, 6, 7, 8]
    # Two twinned negatives for m=3: the base strategy chooses among all, n1 first.
    got = pick(pool, "dark", 3, dark_base="topk").tolist()
    assert got == [2, 3, 1, 4, 5, 6, 7, 8]


def test_dark_set_as_adam_defines_it():
    """ADAM §4.3: "We randomly select m hard negatives ... for distillation, the candidate
    passage set for a query consists of m original negatives, m dark examples in N_mix, and 5
    dark examples in N_mask": no positive, 2m + 5 rows, originals uniform among the twinned."""
    m, n_neg = 3, 8
    twinned = [0, 1, 2, 3, 4, 5]  # augment twinned 6 of the 8 hard negatives
    ids = ["p"] + [f"n{i}" for i in range(n_neg)] + [f"r{i}" for i in twinned]
    ids += [f"m{r}" for r in range(5)]
    pool = QueryPool(
        ids=ids,
        scores=np.arange(len(ids), dtype=float)[::-1],
        kinds=["pos"] + ["neg"] * n_neg + ["rein"] * len(twinned) + ["mask"] * 5,
        parents=[""] * (1 + n_neg) + [f"n{i}" for i in twinned] + [""] * 5,
        mask_ratios=[np.nan] * (1 + n_neg + len(twinned)) + [0.15, 0.25, 0.35, 0.45, 0.55],
    )
    counts = np.zeros(len(ids))
    seeds = 3000
    for seed in range(seeds):
        got = pick(pool, "dark", m, n_masked=5, seed=seed)
        kinds = pool.kinds[got]
        assert len(got) == 2 * m + 5 and "pos" not in kinds
        assert kinds.tolist() == ["neg"] * m + ["rein"] * m + ["mask"] * 5
        # The reinforced rows are the originals' twins.
        assert set(pool.parents[got[m : 2 * m]]) == set(pool.ids[got[:m]])
        counts[got] += 1
    originals = counts[1 : 1 + n_neg] / seeds
    np.testing.assert_allclose(originals[:6], m / 6, atol=0.04)
    assert not originals[6:].any()  # never a negative without a twin


# --- margin ----------------------------------------------------------------------------------


def test_margin_filter_drops_near_positive_negatives():
    pool = QueryPool(
        ids=["p1", "p2", "a", "b", "c", "m"],
        scores=[6.0, 5.0, 4.5, 4.0, 1.0, 9.0],
        kinds=["pos", "pos", "neg", "neg", "neg", "mask"],
    )
    # min positive 5.0, margin 1.0: drop negatives above 4.0 (a); b at exactly 4.0 stays.
    assert margin_keep(pool, 1.0).tolist() == [True, True, False, True, True, True]
    assert margin_filter(pool, 1.0).ids.tolist() == ["p1", "p2", "b", "c", "m"]
    assert pick(pool, "topk", 2, margin=1.0).tolist() == [3, 4]
    with pytest.raises(InsufficientCandidates):
        pick(pool, "topk", 3, margin=1.0)
    with pytest.raises(ValueError, match="needs a positive"):
        margin_keep(neg_pool([1.0]).subset(np.array([0])), 0.0)


# --- shortage --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_pool_raises_or_fills(strategy):
    pool = neg_pool([1.0, 2.0, 3.0])
    with pytest.raises(InsufficientCandidates, match="asked for 4 negatives.*'q1' has 3"):
        pick(pool, strategy, 4, n_strata=2)
    got = pick(pool, strategy, 4, n_strata=2, on_short="fill")
    assert sorted(got.tolist()) == [0, 1, 2]


# --- confidence ------------------------------------------------------------------------------


def test_confidence_by_hand():
    expect = 2.0 - math.log(math.exp(2.0) + math.exp(1.0) + math.exp(0.0))
    assert confidence(2.0, np.array([1.0, 0.0])) == pytest.approx(expect)
    expect_t = 1.0 - math.log(math.exp(1.0) + math.exp(0.5) + 1.0)
    assert confidence(2.0, np.array([1.0, 0.0]), temperature=2.0) == pytest.approx(expect_t)
    batch = confidence(
        np.array([2.0, 2.0]),
        np.array([[1.0, 0.0], [1.0, 50.0]]),
        mask=np.array([[True, True], [True, False]]),
    )
    assert batch[0] == pytest.approx(expect)
    assert batch[1] == pytest.approx(2.0 - math.log(math.exp(2.0) + math.exp(1.0)))
    # Wide logits stay finite.
    assert np.isfinite(confidence(-500.0, np.array([500.0])))


def test_pool_confidence_uses_original_negatives_only():
    pool = dark_pool()
    idx = dark_candidates(pool, 2)
    expect = 9.0 - math.log(math.exp(9.0) + math.exp(3.0) + math.exp(2.0))
    assert pool_confidence(pool, idx) == pytest.approx(expect)


# --- properties ------------------------------------------------------------------------------


@st.composite
def pools_and_m(draw):
    n_neg = draw(st.integers(1, 40))
    n_pos = draw(st.integers(1, 3))
    n_mask = draw(st.integers(0, 5))
    scores = draw(
        st.lists(
            st.floats(-20, 20, allow_nan=False),
            min_size=n_neg + n_pos + n_mask,
            max_size=n_neg + n_pos + n_mask,
        )
    )
    neg_ids = [f"n{i}" for i in range(n_neg)]
    n_rein = draw(st.integers(0, n_neg))
    ids = neg_ids + [f"p{i}" for i in range(n_pos)] + [f"m{i}" for i in range(n_mask)]
    kinds = ["neg"] * n_neg + ["pos"] * n_pos + ["mask"] * n_mask
    # Shuffle so positives are not always at the end.
    perm = draw(st.permutations(range(len(ids))))
    pool = QueryPool(
        ids=[ids[i] for i in perm] + [f"r{i}" for i in range(n_rein)],
        scores=[scores[i] for i in perm] + [0.0] * n_rein,
        kinds=[kinds[i] for i in perm] + ["rein"] * n_rein,
        ranks=[draw(st.integers(-1, 100)) for _ in perm] + [-1] * n_rein,
        parents=[""] * len(perm) + neg_ids[:n_rein],
    )
    m = draw(st.integers(1, n_neg))  # candidates.m >= 1
    return pool, m, draw(st.integers(1, 6)), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=150, deadline=None)
@given(
    pools_and_m(),
    st.sampled_from(STRATEGIES),
    st.sampled_from(["quantile", "equal_width"]),
    st.sampled_from(["teacher", "retriever"]),
)
def test_every_strategy_properties(case, strategy, binning, topk_by):
    pool, m, n_strata, seed = case
    kw = dict(n_strata=n_strata, binning=binning, topk_by=topk_by, seed=seed)
    got = pick(pool, strategy, m, **kw)
    assert got.tolist() == pick(pool, strategy, m, **kw).tolist()
    assert len(set(got.tolist())) == len(got)
    assert not (pool.kinds[got] == "pos").any()
    negs = got[pool.kinds[got] == "neg"]
    assert len(negs) == m
    if strategy == "dark":
        rein = got[pool.kinds[got] == "rein"]
        assert set(pool.parents[rein]) <= set(pool.ids[negs])
        assert (pool.kinds[got] == "mask").sum() == pool.kind_mask("mask").sum()
    else:
        assert len(got) == m
