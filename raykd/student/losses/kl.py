"""KL distillation loss, L_kd of ADAM (Tao et al., Findings of ACL 2024, Eq. 4)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from raykd.student.losses._common import upcast, valid_mask


def kl_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Mean over queries of KL(softmax(teacher / tau_t) || softmax(student / tau_s)).

    student, teacher: [B, n] scores over the same candidates (any column order, shared).
    mask: bool [B, n], True = real candidate; padded columns take no part in either softmax.
    Computed in at least fp32 from log_softmax, so teacher logits spanning tens of units do not
    underflow to log 0. No tau^2 factor. Returns a scalar, or with ``reduction="none"`` the KL of
    each query [B] (ADAM averages over its self-paced subset of a global batch instead).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
    mask = valid_mask(student, mask)
    if not mask.any(dim=1).all():
        raise ValueError("every row needs at least one valid candidate")
    neg_inf = float("-inf")
    log_p = F.log_softmax((upcast(teacher) / teacher_temperature).masked_fill(~mask, neg_inf), 1)
    log_q = F.log_softmax((upcast(student) / student_temperature).masked_fill(~mask, neg_inf), 1)
    # Zero the padded log-probs before subtracting: -inf - -inf would be NaN (and so its grad).
    diff = log_p.masked_fill(~mask, 0.0) - log_q.masked_fill(~mask, 0.0)
    per_query = (log_p.exp() * diff).sum(dim=1)
    return per_query.mean() if reduction == "mean" else per_query
