"""Per-query score normalisation, so that teachers on different scales can be summed.

Scores are normalised per query (the rows sharing a qid) with statistics taken over the query's
reference rows (``ref``; default all its rows):

- ``zscore``: (s - mean) / std with the population std (ddof 0); a query whose scores are all
  equal (std 0) gets 0 everywhere.
- ``minmax``: (s - min) / (max - min); an all-equal query gets 0 everywhere.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["zscore", "minmax"]


def normalize_per_query(
    scores: np.ndarray,
    qids: np.ndarray,
    method: Method = "zscore",
    ref: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise ``scores[i]`` within the group of ``qids[i]``; float64, same order as given.

    scores, qids: [N]. ref: bool [N], the rows whose mean/std (or min/max) define each query's
    normalisation, applied to all its rows; a query without a reference row uses all its rows.
    The score stage passes the positives and pool negatives, so adding dark examples (which a
    min-max can place outside [0, 1]) leaves the original rows' normalised scores unchanged.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) != len(qids):
        raise ValueError(f"scores {s.shape} and qids ({len(qids)}) must be 1-D of equal length")
    if not np.isfinite(s).all():
        raise ValueError("non-finite score")
    if len(s) == 0:
        return s
    _, inv = np.unique(np.asarray(qids), return_inverse=True)
    r = np.ones(len(s), dtype=bool) if ref is None else np.asarray(ref, dtype=bool)
    if r.shape != s.shape:
        raise ValueError(f"ref {r.shape} must match scores {s.shape}")
    r = r | (np.bincount(inv, weights=r, minlength=inv.max() + 1) == 0)[inv]
    count = np.bincount(inv, weights=r)
    if method == "zscore":
        mean = np.bincount(inv, weights=np.where(r, s, 0.0)) / count
        centred = s - mean[inv]
        std = np.sqrt(np.bincount(inv, weights=np.where(r, centred * centred, 0.0)) / count)
        scale = std[inv]
        return np.divide(centred, scale, out=np.zeros_like(s), where=scale > 0)
    if method == "minmax":
        lo = np.full(len(count), np.inf)
        hi = np.full(len(count), -np.inf)
        np.minimum.at(lo, inv[r], s[r])
        np.maximum.at(hi, inv[r], s[r])
        span = (hi - lo)[inv]
        return np.divide(s - lo[inv], span, out=np.zeros_like(s), where=span > 0)
    raise ValueError(f"unknown normalisation {method!r}; use 'zscore' or 'minmax'")
