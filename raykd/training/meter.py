"""Training metrics between reports: averages, counts and steady-state throughput."""

from __future__ import annotations

import math
import time


class Meter:
    """Averages metrics between reports; throughput excludes the first report window (warm-up)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.samples = 0
        self.t0 = time.perf_counter()
        self.last_loss = math.nan
        self.steady_samples = 0
        self.steady_time = 0.0
        self.windows = 0

    def add(self, loss: float, metrics: dict[str, float], samples: int) -> None:
        for k, v in {"loss": loss, **metrics}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        self.samples += samples

    def flush(self) -> dict[str, float]:
        now = time.perf_counter()
        dt = now - self.t0
        # Counts are summed over the window, everything else averaged.
        out = {k: v if k in ("kept", "batch") else v / max(1, self.n) for k, v in self.sums.items()}
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
