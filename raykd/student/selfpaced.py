"""Self-paced instance selection (ADAM, Tao et al. 2024, Eq. 8)."""

from __future__ import annotations

from collections.abc import Sequence

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


def global_keep(
    confidences: Sequence[np.ndarray], epoch: int, total_epochs: int
) -> list[np.ndarray]:
    """ADAM Eq. 8 over a global batch that data parallelism split into parts.

    The paper sorts "a batch of training instances" of size b (128): the global batch of one
    optimizer step, however many workers and accumulation steps share it. confidences: one
    array [b_k] per part (every worker's micro-batches of the step, in a fixed order), together
    the global batch of b = sum b_k. Returns one bool mask [b_k] per part: True = in the
    ``keep_count(b, epoch, total_epochs)`` most confident of the whole batch. Exact ties are
    broken towards the earlier part, then the earlier row.
    """
    flat = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1) for c in confidences])
    keep = np.zeros(len(flat), dtype=bool)
    keep[self_paced_indices(flat, epoch, total_epochs)] = True
    bounds = np.cumsum([len(c) for c in confidences])[:-1]
    return np.split(keep, bounds)


def annotate_self_paced(batches: list[dict], epoch: int, total_epochs: int) -> None:
    """ADAM's self-paced subset (Eq. 8) over the global batch of one optimizer step.

    Gathers every worker's confidences of the step (its micro-batches, equal-sized), ranks the
    global batch once (``selfpaced.global_keep``) and sets each batch's ``keep`` [B] and
    ``kd_denominator`` (global kept count / (workers x micro-batches)), so the gradient that
    DeepSpeed averages is that of the mean KL over the global kept rows.
    """
    import torch.distributed as dist

    local = torch.cat([b["confidence"] for b in batches])
    world = dist.get_world_size() if dist.is_initialized() else 1
    parts = [local]
    if world > 1:
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
    masks = global_keep([p.cpu().numpy() for p in parts], epoch, total_epochs)
    rank = dist.get_rank() if world > 1 else 0
    denominator = sum(int(m.sum()) for m in masks) / (world * len(batches))
    mine = torch.as_tensor(masks[rank], device=local.device)
    for b, keep in zip(batches, mine.split([len(b["confidence"]) for b in batches]), strict=True):
        b["keep"], b["kd_denominator"] = keep, denominator
