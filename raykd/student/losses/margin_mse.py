"""MarginMSE (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation"), generalised to many negatives."""

from __future__ import annotations

import torch

from raykd.student.losses._common import upcast, valid_mask


def margin_mse_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over all valid (query, negative) pairs of ((s_pos - s_neg) - (t_pos - t_neg))^2.

    student, teacher: [B, 1 + n], the positive in column 0. mask: bool [B, 1 + n], True = real
    candidate; column 0 must be valid. Returns a scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
    mask = valid_mask(student, mask)
    if not mask[:, 0].all() or student.shape[1] < 2:
        raise ValueError("need the positive in column 0 (valid) and at least one negative column")
    s, t = upcast(student), upcast(teacher)
    err = (s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])
    valid = mask[:, 1:]
    if not valid.any():
        raise ValueError("no valid negative in the batch")
    return err.pow(2).masked_select(valid).mean()
