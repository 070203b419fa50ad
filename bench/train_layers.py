"""Benchmark P3, decomposed: where raykd's training loop loses throughput against the bare
PyTorch loop of bench/train_throughput.py, one layer at a time, in one run and one Ray.

Each row trains the same steps (train_throughput's model, rows, warm-up and timed steps):
- the bare loop in this process (the baseline, run first and last; ratios are against their mean);
- the bare loop in this process with a local Ray running beside it (what Ray's own processes
  cost: raylet, GCS, dashboard, log monitor);
- the bare loop in a Ray task given ``--threads`` CPUs (what a Ray worker process costs);
- the same steps through raykd's DeepSpeed engine, ZeRO-0, in a Ray task (what DeepSpeed costs);
- the bare loop, then the DeepSpeed one, as a one-worker TorchTrainer's train function (what Ray
  Train's worker costs: its controller, polling, threads);
- raykd's loop itself (``raykd.stages.train.fit``: Ray Data's feed, reports, metrics), last.

    .venv/bin/python bench/train_layers.py [--steps 16 --warmup 4]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from train_throughput import arguments, bare_loop, raykd_loop, setup


def main() -> None:
    ap = arguments(__doc__.split("\n\n")[0])
    args = ap.parse_args()
    if args.steps % args.warmup:
        ap.error("--steps must be a multiple of --warmup (raykd's report windows)")
    args.gpu = False
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        model, table, source, job, name = setup(args, Path(tmp))
        print(f"{name}: batch {args.batch} x (1 + {args.negatives}) passages, ", end="")
        print(f"{args.warmup} warm-up + {args.steps} timed steps, {args.threads} threads")
        rows: list[tuple[str, float]] = [
            ("bare loop, this process", bare_loop(job, model, table, args))
        ]
        print(f"{rows[-1][0]}: {rows[-1][1]:.2f} samples/s", flush=True)

        from raykd.on_ray.session import ensure_ray

        ensure_ray(job.ray)
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        def run(deepspeed: bool) -> float:
            return bare_loop(job, model, table, args, deepspeed=deepspeed)

        def in_trainer(deepspeed: bool) -> float:
            def train_fn() -> dict:
                return {"rate": run(deepspeed)}

            trainer = TorchTrainer(
                train_fn,
                scaling_config=ScalingConfig(
                    num_workers=1, resources_per_worker={"CPU": args.threads}
                ),
                run_config=RunConfig(storage_path=f"{tmp}/layers", name=f"ds{int(deepspeed)}"),
            )
            return trainer.fit().return_value["rate"]

        task = ray.remote(num_cpus=args.threads)(run)
        for label, measure in (
            ("bare loop, this process, Ray running", lambda: run(False)),
            ("bare loop, Ray task", lambda: ray.get(task.remote(False))),
            ("DeepSpeed ZeRO-0, Ray task", lambda: ray.get(task.remote(True))),
            ("bare loop, TorchTrainer worker", lambda: in_trainer(False)),
            ("DeepSpeed ZeRO-0, TorchTrainer worker", lambda: in_trainer(True)),
            (
                "raykd's loop (fit: + Ray Data feed, reports)",  # last: it shuts Ray down
                lambda: raykd_loop(job, model, source, tmp, args)["samples_per_s"],
            ),
        ):
            rate = measure()
            rows.append((label, rate))
            print(f"{label}: {rate:.2f} samples/s", flush=True)
        rows.append(("bare loop, this process, again", bare_loop(job, model, table, args)))
        base = (rows[0][1] + rows[-1][1]) / 2
        print(f"\n| layer | samples/s | / bare ({base:.2f}) |\n|---|---|---|")
        for label, rate in rows:
            print(f"| {label} | {rate:.2f} | {rate / base:.3f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
