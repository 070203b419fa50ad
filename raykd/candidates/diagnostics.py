"""Per-query teacher-score diagnostics of candidate sets (entropy, variance, range).

Every function takes one query's scores [n] or many queries' scores [Q, n] with an optional
bool mask [Q, n] (True = real candidate) for ragged sets; ``pad_ragged`` builds both from a list.
Entropies are in nats; variances are population variances (ddof=0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_ragged(seqs: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Scores [Q, max_n] (padding 0) and mask [Q, max_n] from per-query score lists."""
    width = max((len(s) for s in seqs), default=0)
    scores = np.zeros((len(seqs), width))
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        scores[i, : len(s)] = s
        mask[i, : len(s)] = True
    return scores, mask


def _prepare(scores: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m = np.ones(s.shape, dtype=bool) if mask is None else np.atleast_2d(np.asarray(mask, bool))
    if m.shape != s.shape:
        raise ValueError(f"mask shape {m.shape} != scores shape {s.shape}")
    if not np.isfinite(s[m]).all():
        raise ValueError("teacher scores must be finite")
    if not m.any(axis=1).all():
        raise ValueError("every query needs at least one score")
    return s, m


def _out(values: np.ndarray, scores: np.ndarray) -> np.ndarray | float:
    return float(values[0]) if np.ndim(scores) == 1 else values


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)


def softmax_entropy(
    scores: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    temperature: float = 1.0,
    normalise: bool = False,
) -> np.ndarray | float:
    """Entropy of softmax(scores / temperature) per query.

    ``normalise`` divides by log(n), giving a value in [0, 1] comparable across set sizes
    (a single candidate gives 0).
    """
    s, m = _prepare(scores, mask)
    z = np.where(m, s / temperature, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(m, np.exp(z), 0.0)
    h = _entropy(e / e.sum(axis=1, keepdims=True))
    if normalise:
        n = m.sum(axis=1)
        h = np.divide(h, np.log(n), out=np.zeros_like(h), where=n > 1)
    return _out(h, scores)


def sum_normalised_entropy(
    scores: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray | float:
    """Parry et al.'s entropy of raw scores normalised to sum to 1.

    Scores are shifted by the query's minimum (so the lowest becomes 0 and all are
    non-negative), then divided by their sum; the entropy is taken with 0 log 0 = 0. When all
    scores are equal the shifted sum is 0 and the distribution is taken as uniform (log n).
    """
    s, m = _prepare(scores, mask)
    shifted = np.where(m, s - np.where(m, s, np.inf).min(axis=1, keepdims=True), 0.0)
    total = shifted.sum(axis=1, keepdims=True)
    uniform = m / m.sum(axis=1, keepdims=True)
    p = np.where(total > 0, shifted / np.where(total > 0, total, 1.0), uniform)
    return _out(_entropy(p), scores)


def score_variance(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | float:
    """Population variance of the raw scores per query."""
    s, m = _prepare(scores, mask)
    n = m.sum(axis=1)
    mean = np.where(m, s, 0.0).sum(axis=1) / n
    return _out(np.where(m, (s - mean[:, None]) ** 2, 0.0).sum(axis=1) / n, scores)


def score_range(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | float:
    """max - min of the raw scores per query."""
    s, m = _prepare(scores, mask)
    return _out(np.where(m, s, -np.inf).max(axis=1) - np.where(m, s, np.inf).min(axis=1), scores)


def describe(
    scores: np.ndarray, mask: np.ndarray | None = None, temperature: float = 1.0
) -> dict[str, np.ndarray]:
    """All diagnostics per query as arrays [Q]: n, entropy and entropy_norm (of softmax at
    ``temperature``), sum_entropy, variance, range."""
    s, m = _prepare(scores, mask)
    return {
        "n": m.sum(axis=1),
        "entropy": softmax_entropy(s, m, temperature=temperature),
        "entropy_norm": softmax_entropy(s, m, temperature=temperature, normalise=True),
        "sum_entropy": sum_normalised_entropy(s, m),
        "variance": score_variance(s, m),
        "range": score_range(s, m),
    }
