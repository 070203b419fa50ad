"""Self-paced instance selection (ADAM, Tao et al. 2024, Eq. 8)."""

from __future__ import annotations

import numpy as np
import torch


def keep_count(b: int, t: int, T: int) -> int:
    """Instances kept from a batch of ``b`` in epoch ``t`` of ``T``: round((1 - t/(2T)) * b).

    ``t`` is 1-based (t = 1..T): epoch 1 keeps 1 - 1/(2T) of the batch, epoch T keeps half.
    Rounds half up (not Python's half-to-even) in exact integer arithmetic, and keeps at least
    one instance of a non-empty batch.
    """
    if T < 1 or not 1 <= t <= T:
        raise ValueError(f"need 1 <= t <= T, got t={t}, T={T}")
    if b < 0:
        raise ValueError(f"batch size must be >= 0, got {b}")
    if b == 0:
        return 0
    # floor(b (2T - t) / (2T) + 1/2) = floor((2 b (2T - t) + 2T) / (4T))
    return max(1, (2 * b * (2 * T - t) + 2 * T) // (4 * T))


def self_paced_indices(
    confidences: torch.Tensor | np.ndarray, epoch: int, total_epochs: int
) -> torch.Tensor | np.ndarray:
    """Indices of the ``keep_count(b, epoch, total_epochs)`` most confident instances.

    confidences: [b], higher = the teacher is more confident (ADAM Eq. 7). ``epoch`` is 1-based.
    Ties are broken towards the lower index. The indices are returned in ascending order (batch
    order), as int64, of the input's type (a torch tensor stays on its device).
    """
    is_tensor = isinstance(confidences, torch.Tensor)
    c = confidences.detach().cpu().double().numpy() if is_tensor else np.asarray(confidences)
    c = c.astype(np.float64).reshape(-1)
    if np.isnan(c).any():
        raise ValueError("confidences contain NaN")
    k = keep_count(len(c), epoch, total_epochs)
    order = np.lexsort((np.arange(len(c)), -c))
    idx = np.sort(order[:k]).astype(np.int64)
    return torch.as_tensor(idx, device=confidences.device) if is_tensor else idx
