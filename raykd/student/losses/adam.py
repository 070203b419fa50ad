"""The ADAM objective (Tao et al., "Dense Retrieval Distillation with Adaptive Dark Examples",
Findings of ACL 2024): L = lambda * L_sup + L_kd, L_kd on the self-paced subset (Eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raykd.student.losses.infonce import info_nce
from raykd.student.losses.kl import kl_loss
from raykd.student.selfpaced import self_paced_indices


@dataclass(frozen=True)
class AdamLoss:
    """loss = lambda_sup * sup + kd; ``kept`` of ``batch`` queries entered kd."""

    loss: torch.Tensor
    sup: torch.Tensor
    kd: torch.Tensor
    kept: int
    batch: int


def adam_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    confidences: torch.Tensor | np.ndarray,
    *,
    epoch: int,
    total_epochs: int,
    lambda_sup: float = 0.01,
    mask: torch.Tensor | None = None,
    sup_mask: torch.Tensor | None = None,
    sup_temperature: float = 1.0,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> AdamLoss:
    """ADAM loss over a batch of dark candidate sets.

    student, teacher: [B, K] scores over [positive, candidates...] (positive in column 0), the
        candidates being a dark set: original negatives, reinforced negatives, masked positives.
    confidences: [B] teacher confidence C(q) per query (ADAM Eq. 7, ``candidates.confidence``).
    epoch, total_epochs: 1-based epoch t of T for the self-paced keep ratio 1 - t/(2T).
    mask: bool [B, K], True = real candidate (padding excluded from both losses).
    sup_mask: bool [B, K], the columns of L_sup, i.e. the positive and the original negatives;
        default ``mask`` (every candidate). Build it from the candidate kinds ("pos"/"neg").
    L_sup = InfoNCE over the full batch; L_kd = KL over the kept queries only.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher must be equal [B, K]")
    b = student.shape[0]
    if len(confidences) != b:
        raise ValueError(f"{len(confidences)} confidences for a batch of {b}")
    if mask is None:
        mask = torch.ones_like(student, dtype=torch.bool)
    sup = info_nce(
        student, temperature=sup_temperature, mask=mask if sup_mask is None else sup_mask & mask
    )
    kept = torch.as_tensor(
        self_paced_indices(confidences, epoch, total_epochs), device=student.device
    )
    kd = kl_loss(
        student[kept],
        teacher[kept],
        mask=mask[kept],
        student_temperature=student_temperature,
        teacher_temperature=teacher_temperature,
    )
    return AdamLoss(loss=lambda_sup * sup + kd, sup=sup, kd=kd, kept=len(kept), batch=b)
