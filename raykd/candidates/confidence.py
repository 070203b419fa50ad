"""Teacher confidence per query (ADAM, Tao et al. 2024, Eq. 7)."""

from __future__ import annotations

import numpy as np

from raykd.candidates.pool import QueryPool


def confidence(
    pos_score: float | np.ndarray,
    neg_scores: np.ndarray,
    *,
    temperature: float = 1.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """C(q) = log softmax of the positive against positive + original negatives.

    C = s_pos/T - logsumexp([s_pos/T, s_neg_1/T, ...]) <= 0; closer to 0 = more confident.
    pos_score: [] or [B]; neg_scores: [n] or [B, n]; mask: bool like neg_scores, True = real
    negative (padding is ignored). Returns a float64 array of shape [] or [B].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    pos = np.asarray(pos_score, dtype=np.float64) / temperature
    neg = np.asarray(neg_scores, dtype=np.float64) / temperature
    if mask is not None:
        neg = np.where(np.asarray(mask, dtype=bool), neg, -np.inf)
    allv = np.concatenate([pos[..., None], neg], axis=-1)
    top = allv.max(axis=-1)
    lse = top + np.log(np.exp(allv - top[..., None]).sum(axis=-1))
    return pos - lse


def pool_confidence(
    pool: QueryPool,
    indices: np.ndarray,
    *,
    pos_index: int | None = None,
    temperature: float = 1.0,
) -> float:
    """C(q) for a candidate set: the "neg" rows among ``indices`` against one positive.

    Rein and mask rows of a dark set are not original negatives and are ignored.
    ``pos_index`` picks the positive; default the pool's first "pos" row.
    """
    if pos_index is None:
        pos = np.flatnonzero(pool.positives())
        if not pos.size:
            raise ValueError(f"query {pool.qid!r} has no positive")
        pos_index = int(pos[0])
    elif pool.kinds[pos_index] != "pos":
        raise ValueError(f"row {pos_index} of query {pool.qid!r} is not a positive")
    indices = np.asarray(indices, dtype=np.int64)
    negs = indices[pool.kinds[indices] == "neg"]
    return float(confidence(pool.scores[pos_index], pool.scores[negs], temperature=temperature))
