import math

import numpy as np
import pytest

from raykd.candidates.diagnostics import (
    describe,
    pad_ragged,
    score_range,
    score_variance,
    softmax_entropy,
    sum_normalised_entropy,
)


def entropy(ps):
    return -sum(p * math.log(p) for p in ps if p > 0)


def test_softmax_entropy_by_hand():
    z = [math.exp(2), math.exp(1), math.exp(0)]
    expect = entropy([v / sum(z) for v in z])
    assert softmax_entropy(np.array([2.0, 1.0, 0.0])) == pytest.approx(expect)
    assert softmax_entropy(np.array([4.0, 2.0, 0.0]), temperature=2.0) == pytest.approx(expect)
    assert softmax_entropy(np.zeros(4)) == pytest.approx(math.log(4))
    assert softmax_entropy(np.zeros(4), normalise=True) == pytest.approx(1.0)
    assert softmax_entropy(np.array([5.0]), normalise=True) == 0.0
    # Wide logits: no overflow.
    assert softmax_entropy(np.array([1000.0, -1000.0])) == pytest.approx(0.0, abs=1e-12)


def test_sum_normalised_entropy_by_hand():
    # Shift by min 1: [0, 1, 3] -> p = [0, 1/4, 3/4].
    assert sum_normalised_entropy(np.array([1.0, 2.0, 4.0])) == pytest.approx(entropy([0.25, 0.75]))
    assert sum_normalised_entropy(np.full(3, 7.0)) == pytest.approx(math.log(3))


def test_variance_and_range_by_hand():
    s = np.array([1.0, 2.0, 4.0, 5.0])
    assert score_variance(s) == pytest.approx(((1 - 3) ** 2 + 1 + 1 + 4) / 4)
    assert score_range(s) == pytest.approx(4.0)


def test_ragged_many_queries_match_one_by_one():
    seqs = [[1.0, 2.0, 4.0], [0.0, 10.0], [3.0]]
    scores, mask = pad_ragged(seqs)
    assert mask.tolist() == [[True] * 3, [True, True, False], [True, False, False]]
    table = describe(scores, mask)
    for i, seq in enumerate(seqs):
        s = np.array(seq)
        assert table["n"][i] == len(seq)
        assert table["entropy"][i] == pytest.approx(softmax_entropy(s))
        assert table["entropy_norm"][i] == pytest.approx(softmax_entropy(s, normalise=True))
        assert table["sum_entropy"][i] == pytest.approx(sum_normalised_entropy(s))
        assert table["variance"][i] == pytest.approx(np.var(s))
        assert table["range"][i] == pytest.approx(np.ptp(s))


def test_describe_entropy_at_the_distillation_temperature():
    # [0, 1]: at T=1 nearly uniform (log 2 = 0.693); at T=0.05, softmax([0, 20]) is peaked.
    scores, mask = pad_ragged([[0.0, 1.0]])
    assert describe(scores, mask)["entropy"][0] == pytest.approx(
        softmax_entropy(np.array([0.0, 1.0]))
    )
    p = 1 / (1 + np.exp(20.0))
    peaked = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert describe(scores, mask, temperature=0.05)["entropy"][0] == pytest.approx(peaked)


def test_bad_input():
    with pytest.raises(ValueError, match="finite"):
        score_variance(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="at least one"):
        describe(np.zeros((1, 2)), np.zeros((1, 2), dtype=bool))
