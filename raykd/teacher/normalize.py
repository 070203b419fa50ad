"""Per-query score normalisation, so that teachers on different scales can be summed.

Scores are normalised over each query's scored examples (the rows sharing a qid):

- ``zscore``: (s - mean) / std with the population std (ddof 0); a query whose scores are all
  equal (std 0) gets 0 everywhere.
- ``minmax``: (s - min) / (max - min); an all-equal query gets 0 everywhere.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["zscore", "minmax"]


def normalize_per_query(
    scores: np.ndarray, qids: np.ndarray, method: Method = "zscore"
) -> np.ndarray:
    """Normalise ``scores[i]`` within the group of ``qids[i]``; float64, same order as given."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) != len(qids):
        raise ValueError(f"scores {s.shape} and qids ({len(qids)}) must be 1-D of equal length")
    if not np.isfinite(s).all():
        raise ValueError("non-finite score")
    if len(s) == 0:
        return s
    _, inv = np.unique(np.asarray(qids), return_inverse=True)
    count = np.bincount(inv)
    if method == "zscore":
        mean = np.bincount(inv, weights=s) / count
        centred = s - mean[inv]
        std = np.sqrt(np.bincount(inv, weights=centred * centred) / count)
        scale = std[inv]
        return np.divide(centred, scale, out=np.zeros_like(s), where=scale > 0)
    if method == "minmax":
        lo = np.full(len(count), np.inf)
        hi = np.full(len(count), -np.inf)
        np.minimum.at(lo, inv, s)
        np.maximum.at(hi, inv, s)
        span = (hi - lo)[inv]
        return np.divide(s - lo[inv], span, out=np.zeros_like(s), where=span > 0)
    raise ValueError(f"unknown normalisation {method!r}; use 'zscore' or 'minmax'")
