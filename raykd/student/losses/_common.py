"""Shared input checks for the losses."""

from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least fp32: half/bf16 logits lose too much in softmax and subtraction."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def valid_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A bool [B, n] mask (all True when None), checked against ``scores``."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, n], got shape {tuple(scores.shape)}")
    if mask is None:
        return torch.ones_like(scores, dtype=torch.bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != scores {tuple(scores.shape)}")
    return mask.to(device=scores.device, dtype=torch.bool)
