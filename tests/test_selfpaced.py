import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from raykd.student.selfpaced import global_keep, keep_count, self_paced_indices


def test_keep_counts_for_each_epoch():
    # b=128, T=5: (1 - t/10) * 128 = 115.2, 102.4, 89.6, 76.8, 64.
    assert [keep_count(128, t, 5) for t in range(1, 6)] == [115, 102, 90, 77, 64]
    # b=10, T=1: the only epoch is the last, keeping half.
    assert keep_count(10, 1, 1) == 5
    # b=5, T=2: 3.75 -> 4, then 2.5 -> 3 (half up, not Python's round-half-even 2).
    assert [keep_count(5, t, 2) for t in (1, 2)] == [4, 3]
    # b=3, T=4: 3 * 1/2 = 1.5 -> 2 in the last epoch.
    assert keep_count(3, 4, 4) == 2


def test_keep_count_edges():
    assert keep_count(1, 3, 3) == 1
    assert keep_count(0, 1, 1) == 0
    for t, T in [(0, 3), (4, 3), (1, 0)]:
        with pytest.raises(ValueError, match="1 <= t <= T"):
            keep_count(8, t, T)


def test_indices_most_confident_ties_by_index():
    conf = np.array([-0.5, -0.1, -0.5, -2.0, -0.1, -0.5])
    # T=2, t=2 keeps 3: -0.1 (1), -0.1 (4), then the first -0.5 (0).
    assert self_paced_indices(conf, 2, 2).tolist() == [0, 1, 4]
    # t=1 keeps round(4.5) = 5: everything but the least confident (3).
    assert self_paced_indices(conf, 1, 2).tolist() == [0, 1, 2, 4, 5]


def test_indices_keep_the_input_type():
    conf = torch.tensor([0.3, 0.9, 0.1, 0.5], dtype=torch.float16)
    got = self_paced_indices(conf, 2, 2)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    assert got.tolist() == [1, 3]
    with pytest.raises(ValueError, match="NaN"):
        self_paced_indices(np.array([0.1, np.nan]), 1, 1)


@given(
    st.lists(st.floats(-50, 0, allow_nan=False), min_size=1, max_size=64),
    st.integers(1, 10),
    st.data(),
)
def test_indices_properties(conf, T, data):
    t = data.draw(st.integers(1, T))
    got = self_paced_indices(np.array(conf), t, T)
    assert len(got) == keep_count(len(conf), t, T) >= 1
    assert np.all(np.diff(got) > 0)
    dropped = np.setdiff1d(np.arange(len(conf)), got)
    if dropped.size:
        assert min(conf[i] for i in got) >= max(conf[i] for i in dropped)


def test_global_batch_selection_is_the_same_for_1_and_4_workers():
    """ADAM Eq. 8 sorts the batch of b = 128: split over 4 workers x 2 micro-batches, the kept
    rows are those the single worker keeps, not each part's own top (1 - t/2T)."""
    rng = np.random.default_rng(0)
    conf = -rng.exponential(size=128)
    rows = np.arange(128)
    for epoch in (1, 2, 3):
        (one,) = global_keep([conf], epoch, 3)
        assert one.sum() == keep_count(128, epoch, 3)
        # Rows dealt round-robin to 4 workers, as a data-parallel split may.
        parts = [rows[w::4] for w in range(4)]
        masks = global_keep([conf[p] for p in parts], epoch, 3)
        kept4 = np.sort(np.concatenate([p[m] for p, m in zip(parts, masks, strict=True)]))
        np.testing.assert_array_equal(kept4, rows[one])
        # Per-part selection (what a per-worker ranking did) keeps other rows.
        local = np.sort(np.concatenate([p[self_paced_indices(conf[p], epoch, 3)] for p in parts]))
        assert not np.array_equal(local, rows[one])
