"""The ADAM objective (Tao et al., "Dense Retrieval Distillation with Adaptive Dark Examples",
Findings of ACL 2024, Eq. 9): L = lambda * L_sup over the batch + L_kd over the self-paced subset
(Eq. 8), L_kd's candidate set being the distillation set of dark examples, without the positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raykd.student.losses.infonce import info_nce
from raykd.student.losses.kl import kl_loss
from raykd.student.losses.objective import compose


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
    keep: torch.Tensor,
    *,
    lambda_sup: float = 0.01,
    mask: torch.Tensor | None = None,
    sup_mask: torch.Tensor | None = None,
    kd_denominator: float | None = None,
    sup_temperature: float = 1.0,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> AdamLoss:
    """ADAM loss over a batch of rows [positive, dark set].

    student, teacher: [B, 1 + K] scores, the positive in column 0, then the distillation set
        P~ = P- ∪ N_mix ∪ N_mask (§3.3 Eq. 9; §4.3: m original negatives, their m reinforced
        twins and 5 masked positives, K = 2m + 5).
    keep: bool [B], the instances of the self-paced subset (Eq. 8; ``selfpaced.global_keep``).
    mask: bool [B, 1 + K], True = real column (padding excluded from both losses).
    sup_mask: bool [B, 1 + K], the columns of L_sup: the positive and the original negatives
        ("a positive passage and all the selected negatives", §4.3); default every column.
    kd_denominator: what the kept rows' KL sum is divided by; default ``keep.sum()`` (the mean
        over the kept rows). Data-parallel training passes the global kept count / (workers x
        accumulation steps), so the averaged gradient is that of the global batch's mean.
    Untempered by default (§3.2): the temperatures exist for teachers on other scales.

    L_sup = InfoNCE (Eq. 3.1), mean over the batch; L_kd = KL(teacher || student) over the
    distillation set (Eq. 4) of the kept rows. The positive takes no part in L_kd: replacing the
    sharp positive by dark examples is the method.
    """
    if student.dim() != 2 or student.shape != teacher.shape or student.shape[1] < 2:
        raise ValueError(f"student {tuple(student.shape)} and teacher must be equal [B, 1 + K]")
    b = student.shape[0]
    keep = torch.as_tensor(keep, dtype=torch.bool, device=student.device).reshape(-1)
    if len(keep) != b:
        raise ValueError(f"keep has {len(keep)} entries for a batch of {b}")
    if mask is None:
        mask = torch.ones_like(student, dtype=torch.bool)
    sup = info_nce(
        student, temperature=sup_temperature, mask=mask if sup_mask is None else sup_mask & mask
    )
    kept = int(keep.sum())
    if kept:
        per_query = kl_loss(
            student[keep, 1:],
            teacher[keep, 1:],
            mask=mask[keep, 1:],
            student_temperature=student_temperature,
            teacher_temperature=teacher_temperature,
            reduction="none",
        )
        kd = per_query.sum() / (kept if kd_denominator is None else kd_denominator)
    else:  # this worker's part of the global batch holds none of the kept rows
        kd = student.sum() * 0.0
    loss = compose("kd_sup", kd, sup, lambda_sup)
    return AdamLoss(loss=loss, sup=sup, kd=kd, kept=kept, batch=b)
