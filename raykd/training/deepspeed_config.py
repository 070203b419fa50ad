"""The DeepSpeed config dict, built from a train section (no JSON file to keep in sync).

The optimizer and scheduler are torch objects passed to ``deepspeed.initialize``, not config
entries: a config-defined DeepSpeed optimizer JIT-compiles C++/CUDA ops for minutes on CPU nodes.
"""

from __future__ import annotations

from typing import Any

from raykd.config import TrainerSection


def deepspeed_config(params: TrainerSection, *, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of a trainer section on ``world_size`` workers: micro-batch,
    accumulation, clipping, ZeRO stage and bf16 (``TrainerSection.use_bf16``).
    """
    micro = params.micro_batch
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": params.grad_accum,
        "train_batch_size": micro * params.grad_accum * world_size,
        "gradient_clipping": params.grad_clip,
        "zero_optimization": {"stage": params.zero_stage},
        # torch.optim.AdamW is not on DeepSpeed's list of ZeRO-tested optimizers, but works.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": params.use_bf16},
        "steps_per_print": 10**9,  # raykd reports progress itself
        "wall_clock_breakdown": False,
    }
    if params.zero_stage == 3:
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    return cfg
