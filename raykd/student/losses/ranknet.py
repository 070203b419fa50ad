"""RankNet (Burges et al. 2005, "Learning to Rank using Gradient Descent") over every candidate
pair the teacher orders, as in the loss ablation of Parry, Ganguly, MacAvaney 2025."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.student.losses._common import upcast, valid_mask


def ranknet_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over pairs (i, j) with teacher_i > teacher_j of log(1 + exp(-(s_i - s_j))).

    student, teacher: [B, n] scores over the same candidates; pairs are within a row, both
    valid, teacher ties skipped. mask: bool [B, n], True = real candidate. Returns a scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
    mask = valid_mask(student, mask)
    s, t = upcast(student), upcast(teacher)
    pairs = (t[:, :, None] > t[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    if not pairs.any():
        raise ValueError("the teacher orders no pair of valid candidates")
    diff = s[:, :, None] - s[:, None, :]
    return F.softplus(-diff).masked_select(pairs).mean()
