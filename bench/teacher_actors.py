"""P2: raykd's scoring job with 1 actor against 2 actors (1 torch thread each), same pairs.

Pairs and model as in P1 (bench/teacher_throughput.py). Each run is timed end to end (tokenise
tasks, actor start, model load, scoring); scores of both runs must agree.

    .venv/bin/python bench/teacher_actors.py --pairs 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from teacher_throughput import build_model, load_pairs, run_raykd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()

    import ray

    source, queries, passages = load_pairs(args.pairs)
    model = build_model(Path(tempfile.mkdtemp()) / "minilm-ce")
    print(f"load: {os.getloadavg()[0]:.1f} (1-min), {os.cpu_count()} cpus; pairs from {source}")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    rates, scores = {}, {}
    try:
        for actors in (1, 2):
            rates[actors], scores[actors] = run_raykd(
                model, queries, passages, batch_size=args.batch_size,
                max_length=args.max_length, threads=1, actors=actors,
            )  # fmt: skip
    finally:
        ray.shutdown()
    diff = float(np.max(np.abs(scores[1] - scores[2])))
    print(f"1 actor : {rates[1]:8.1f} pairs/s ({args.pairs} pairs, 1 torch thread per actor)")
    print(f"2 actors: {rates[2]:8.1f} pairs/s")
    print(f"ratio 2 / 1 actors: {rates[2] / rates[1]:.2f}x (target >= 1.7x)")
    print(f"max |score diff| between runs: {diff:.2e}")
    print(f"load at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
