"""Distillation and contrastive losses for the dual-encoder student."""

from collections.abc import Callable

import torch

from raykd.student.losses.adam import AdamLoss, adam_loss
from raykd.student.losses.infonce import in_batch_info_nce, info_nce
from raykd.student.losses.kl import kl_loss
from raykd.student.losses.margin_mse import margin_mse_loss
from raykd.student.losses.objective import compose
from raykd.student.losses.ranknet import ranknet_loss

# Teacher-distillation losses sharing the signature (student, teacher, *, mask=None).
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "kl": kl_loss,
    "margin_mse": margin_mse_loss,
    "ranknet": ranknet_loss,
}

__all__ = [
    "LOSSES",
    "AdamLoss",
    "adam_loss",
    "compose",
    "in_batch_info_nce",
    "info_nce",
    "kl_loss",
    "margin_mse_loss",
    "ranknet_loss",
]
