"""What the student minimises (``train.objective``), composed in one place for every strategy."""

from __future__ import annotations

from typing import Literal

import torch

Objective = Literal["kd_sup", "kd", "sup"]


def compose(
    objective: Objective, kd: torch.Tensor, sup: torch.Tensor, lambda_sup: float
) -> torch.Tensor:
    """The loss from its two terms (scalars).

    kd_sup: ``kd + lambda_sup * sup``, ADAM's L (Tao et al. 2024, Eq. 9; λ = 0.01 in §4.3).
    kd: distillation alone (ADAM §4.5 finds L_sup "indispensable" even at λ = 0.01; this is the
        ablation).
    sup: InfoNCE over the positive and the candidate set alone, no teacher: the contrastive
        objective (LCE-style) that Parry, Ganguly and MacAvaney (2025) set distillation against.
    """
    if objective == "kd_sup":
        return kd + lambda_sup * sup
    if objective == "kd":
        return kd
    if objective == "sup":
        return sup
    raise ValueError(f"unknown objective {objective!r}; use kd_sup, kd or sup")
