"""The hardware table ``raykd plan`` assumes: peak FLOP/s, memory and start-up costs per device.

GPU peaks are the vendors' published dense (no sparsity) bf16 tensor-core figures. A "cpu"
device is one machine: its cores times a per-core fp32 peak (two AVX2 FMA units at ~3 GHz).
Achieved rates are a fraction of peak, ``utilisation``; measured rates (``--measured``) replace
that assumption stage by stage.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from raykd.config import ConfigError

GIB = 2**30

# Published dense bf16 tensor-core peaks, FLOP/s, memory, and the host's vCPUs per GPU of the
# usual cloud machine (p5e, p5, p4d, g5 and g6 .2xlarge): they run the tokenisers. Matched in
# order against torch.cuda.get_device_name(), so "H100 PCIe" precedes "H100".
GPUS: dict[str, tuple[float, float, int]] = {
    "H200": (989e12, 141 * GIB, 24),
    "H100 PCIe": (756e12, 80 * GIB, 24),
    "H100": (989e12, 80 * GIB, 24),
    "A100": (312e12, 80 * GIB, 12),
    "A10G": (70e12, 24 * GIB, 8),
    "L4": (121e12, 24 * GIB, 8),
}
CPU_CORE_PEAK = 96e9  # 2 FMA units x 8 fp32 lanes x 2 FLOP x 3 GHz

# Assumed fractions of peak. GPU figures are assumptions until bench/gpu_check.py has measured
# them (no GPU has been lent to this project yet): small encoders (hidden 384-768) leave a GPU's
# tensor cores mostly idle, so a quarter of the bf16 peak for inference and a fifth for training.
# CPU figures measured here: all-MiniLM-L6-v2 encoding at 256 tokens on 2 cores ran at 47-138
# GFLOP/s (9-23 passages/s, by the day and the load) against a 192 GFLOP/s peak.
UTILISATION = {"gpu": {"infer": 0.25, "train": 0.2}, "cpu": {"infer": 0.4, "train": 0.3}}

# Fixed seconds per stage beyond its FLOPs: a Ray Data actor pool starting and loading its model
# (per pool), Ray Train's worker group and DeepSpeed's engine. CPU figures sit in the middle of
# what this 2-core machine measured, whose speed varies 3x by the hour: an encoding pool of
# MiniLM adds 20-23 s to its work (bench/encode_throughput.py), the demo's tiny student 5-9 s; the
# demo's TorchTrainer started in 12-35 s and stepped in 0.25-0.8 s per 32 rows (README "Plan").
# GPU figures are assumed.
POOL_START_S = {"gpu": 30.0, "cpu": 12.0}
TRAIN_START_S = {"gpu": 60.0, "cpu": 25.0}
# A training step's cost beyond its FLOPs (DeepSpeed's step, the feed, the report).
TRAIN_STEP_S = {"gpu": 0.1, "cpu": 0.5}
# A fast (Rust) Hugging Face tokenizer on one thread, tokens of the whole text (it tokenises
# before truncating): measured here on SciFact abstracts and 60-word passages, 230-290k/s.
TOKENIZE_TOKENS_PER_S = 250e3


@dataclass(frozen=True)
class Hardware:
    """``count`` devices of one kind; peak and memory are per device."""

    name: str
    kind: str  # "gpu" or "cpu"
    count: int
    peak_flops: float
    memory_bytes: float
    cpus: int  # per device: the host's vCPUs beside a GPU, a CPU machine's cores

    def rate(self, work: str, devices: int | None = None) -> float:
        """Assumed achieved FLOP/s of ``devices`` (default all) for ``work`` (infer, train)."""
        n = self.count if devices is None else min(devices, self.count)
        return n * self.peak_flops * UTILISATION[self.kind][work]

    @property
    def label(self) -> str:
        return f"{self.count}x{self.name}" if self.kind == "gpu" else self.name


def gpu_peak(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a GPU named as ``torch.cuda.get_device_name()`` names it."""
    return next((GPUS[k][0] for k in GPUS if k.lower() in device_name.lower()), None)


def parse_hardware(text: str) -> Hardware:
    """``cpu`` (this machine's cores), ``16xcpu`` (16 cores), ``H100``, ``8xH100``..."""
    m = re.fullmatch(r"\s*(?:(\d+)\s*[x×]\s*)?([\w ]+?)\s*", text, flags=re.IGNORECASE)
    if m is None:
        raise ConfigError(f"--hardware {text!r}: expected NAME or COUNTxNAME, e.g. 8xH100")
    count, name = int(m.group(1) or 1), m.group(2)
    if count < 1:
        raise ConfigError(f"--hardware {text!r}: the count must be at least 1")
    if name.lower() == "cpu":
        cores = count if m.group(1) else os.cpu_count() or 1
        return Hardware(f"cpu ({cores} cores)", "cpu", 1, cores * CPU_CORE_PEAK, 0.0, cores)
    known = {k.lower(): k for k in GPUS}
    if name.lower() not in known:
        raise ConfigError(f"--hardware {text!r}: unknown device; known: cpu, {', '.join(GPUS)}")
    peak, memory, cpus = GPUS[known[name.lower()]]
    return Hardware(known[name.lower()], "gpu", count, peak, memory, cpus)
