"""Training metrics between reports: averages, counts and steady-state throughput, per report
window and per optimizer step."""

from __future__ import annotations

import math
import time

# Counts are summed over a window or a step, everything else averaged.
COUNTS = ("kept", "batch")


def _average(sums: dict[str, float], n: int) -> dict[str, float]:
    return {k: v if k in COUNTS else v / max(1, n) for k, v in sums.items()}


class Meter:
    """Averages metrics between reports; throughput excludes the first report window (warm-up).

    Each optimizer step also closes a record of its own (``end_step``): the per-step points that
    the reports carry to the trackers, whatever the report interval.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.samples = 0
        self.t0 = time.perf_counter()
        self.last_loss = math.nan
        self.steady_samples = 0
        self.steady_time = 0.0
        self.windows = 0
        self.step_sums: dict[str, float] = {}
        self.step_n = 0
        self.step_samples = 0
        self.step_t0 = self.t0
        self.steps: list[dict[str, float]] = []

    def add(self, loss: float, metrics: dict[str, float], samples: int) -> None:
        for k, v in {"loss": loss, **metrics}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.step_sums[k] = self.step_sums.get(k, 0.0) + v
        self.n += 1
        self.step_n += 1
        self.samples += samples
        self.step_samples += samples

    def end_step(self, step: int, epoch: int, lr: float) -> None:
        """Close optimizer step ``step`` (of 1-based ``epoch``, run at learning rate ``lr``)."""
        now = time.perf_counter()
        dt = now - self.step_t0
        record = _average(self.step_sums, self.step_n)
        record["samples_per_s"] = self.step_samples / dt if dt > 0 else 0.0
        record.update(step=step, epoch=epoch, lr=lr)
        self.steps.append(record)
        self.step_sums, self.step_n, self.step_samples, self.step_t0 = {}, 0, 0, now

    def take_steps(self) -> list[dict[str, float]]:
        """The step records closed since the last call."""
        steps, self.steps = self.steps, []
        return steps

    def flush(self) -> dict[str, float]:
        now = time.perf_counter()
        dt = now - self.t0
        out = _average(self.sums, self.n)
        out["samples_per_s"] = self.samples / dt if dt > 0 else 0.0
        if self.n:
            self.last_loss = out["loss"]
            self.windows += 1
            if self.windows > 1:
                self.steady_samples += self.samples
                self.steady_time += dt
        self.sums, self.n, self.samples, self.t0 = {}, 0, 0, now
        return out

    def run_rate(self) -> float:
        return self.steady_samples / self.steady_time if self.steady_time > 0 else math.nan
