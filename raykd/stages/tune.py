"""``raykd tune``: a Ray Tune sweep whose trials re-run build -> train -> eval.

The stages up to ``score`` run once in the job's run dir (the *base*); so does the dev rerank set
that gives ASHA a metric after every epoch. Each trial is a function trainable that reserves no
CPU (``DRIVER_RESOURCES``): it opens its own run dir ``<base>/tune/trials/<trial id>`` as an
overlay of the base (upstream artifacts and manifests are read from there), applies its sampled
values to the config and runs build, train and eval with ``run_stage``. The train stage, seeing a
Tune session, forwards each epoch's dev metric to Tune (``raykd.tuning.report``), so ASHA can stop
it early.

``tune.num_samples`` repeats each point of a pure-grid space, repeat k with the job's
``train.seed`` and ``candidates.seed`` + k; in a space with a sampled parameter it is the number
of samples, all on the job's seeds (the rule: ``raykd.tuning.repeats``). The results are one row
per trial and one per point (n, mean ± std of the metric over its trials); ``best.yaml`` is the
best point by mean.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import yaml

from raykd import console
from raykd.config import ConfigError, JobConfig, TrainSection, validate
from raykd.console import STORY, progress
from raykd.run_dir import RunDir
from raykd.stages.pipeline import MANIFESTS, STAGES, run_pipeline, run_stage, stage_by_name
from raykd.tuning.dev_metric import write_dev_set
from raykd.tuning.loggers import tune_loggers
from raykd.tuning.repeats import REPEAT, param_space, point_rows, repeat_seeds, repeats_per_point
from raykd.tuning.report import trial_progress
from raykd.tuning.space import SearchSpace, apply_values, load_space

log = logging.getLogger(__name__)

TRIAL_STAGES = ("build", "train", "eval")
EXPERIMENT = "sweep"
# What a trial's own process reserves. Tune needs a resource; one byte of Ray's logical memory
# leaves every CPU to the trial's Ray Data and Ray Train work. A fraction of a CPU (0.01) did not:
# on a 2-CPU node an actor pool's CPU plus a 1-CPU Ray Data task (ListFiles, read, write) then
# need 2 of the 1.99 left, and the first trial's eval waited forever for its read.
DRIVER_RESOURCES = {"memory": 1}


def shared_paths(cfg: JobConfig) -> tuple[str, ...]:
    """What a trial reads from the base: outputs and manifests of every stage before build."""
    out: list[str] = []
    for stage in STAGES:
        if stage.name == TRIAL_STAGES[0]:
            break
        out += [*stage.output_paths(cfg), f"{MANIFESTS}/{stage.name}.json"]
    return tuple(out)


def trial_config(base: JobConfig, values: dict[str, Any], run_dir: str, dev_set: str) -> JobConfig:
    """A trial's config: the sampled values on the base, a repeat's seeds, its run dir, and a
    student-only eval (BM25 and teacher reranking are the same for every trial)."""
    values = dict(values)
    repeat = values.pop(REPEAT, 0)
    return apply_values(
        base,
        {
            **repeat_seeds(base, repeat, values),
            **values,
            "run_dir": run_dir,
            "tune.dev_set": dev_set,
            "eval.systems": ["student"],
        },
        "trial",
    )


def max_concurrent(resources: dict[str, float], train: TrainSection) -> int:
    """Trials that fit at once: each needs num_workers x (cpus_per_worker, 1 GPU if use_gpu).

    Each trial also keeps one CPU for the Ray Data tasks that build and feed it: with those held
    by other trials' workers, its reads never get scheduled and the sweep deadlocks (seen on 2
    CPUs with 2 concurrent trials).
    """
    cpu = train.num_workers * train.cpus_per_worker + 1.0
    n = int(resources.get("CPU", 0.0) // cpu)
    if train.use_gpu:
        n = min(n, int(resources.get("GPU", 0.0) // train.num_workers))
    return max(1, n)


def _trial(config: dict[str, Any], base: dict[str, Any], base_uri: str, dev_set: str) -> None:
    from ray import tune

    from raykd.on_ray.errors import unwrap_ray_error
    from raykd.on_ray.session import use_parquet_reader_v1

    use_parquet_reader_v1()
    cfg = validate(base, "tune base")
    base_run = RunDir.open(base_uri)
    trial_id = tune.get_context().get_trial_id()
    run = RunDir.open(
        base_run.uri_of(f"tune/trials/{trial_id}"), base=base_run, inherit=shared_paths(cfg)
    )
    cfg = trial_config(cfg, config, run.uri, dev_set)
    with unwrap_ray_error():
        for name in TRIAL_STAGES:
            run_stage(stage_by_name(name), cfg, run)


def _search_alg(cfg: JobConfig, space: SearchSpace, concurrent: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tu = cfg.tune
    if tu.search == "optuna" and space.has_grid:
        raise ConfigError(f"{space.source}: tune.search optuna cannot sample a grid; use random")
    use_optuna = tu.search == "optuna" or (tu.search == "auto" and not space.has_grid)
    if use_optuna:
        try:
            from ray.tune.search.optuna import OptunaSearch

            return "optuna", OptunaSearch(metric=tu.metric, mode=tu.mode, seed=tu.seed)
        except ImportError:
            if tu.search == "optuna":
                raise ConfigError("tune.search is optuna but optuna is not installed") from None
    # Tune ignores max_concurrent_trials for a BasicVariantGenerator it did not create.
    return "random", BasicVariantGenerator(random_state=tu.seed, max_concurrent=concurrent)


@dataclass(frozen=True)
class TuneSummary:
    rows: list[dict[str, Any]]  # one per trial, best first
    points: list[dict[str, Any]]  # one per point (its trials' n, mean, std), best mean first
    best: dict[str, Any]  # the best point
    best_config: JobConfig
    wall_s: float


def run_tune(cfg: JobConfig, run: RunDir, space_path: str) -> TuneSummary:
    """Score once, sweep ``space_path`` over build -> train -> eval, write the results."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    start = time.perf_counter()
    space = load_space(space_path, cfg)
    tu = cfg.tune
    run_pipeline(cfg, run, until="score")
    dev_set = write_dev_set(cfg, run)

    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, base=cfg.model_dump(mode="json"), base_uri=run.uri, dev_set=dev_set
        ),
        DRIVER_RESOURCES,
    )
    concurrent = tu.max_concurrent_trials or max_concurrent(ray.cluster_resources(), cfg.train)
    repeats = repeats_per_point(space, tu.num_samples)
    tune_space, tune_samples = param_space(space, tu.num_samples)
    search_name, search_alg = _search_alg(cfg, space, concurrent)
    grace = min(tu.grace_period, cfg.train.epochs)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        # One past the last epoch: at max_t ASHA stops the trial at that report, before its
        # train stage commits the student and its eval runs.
        max_t=cfg.train.epochs + 1,
        grace_period=grace,
        reduction_factor=tu.reduction_factor,
    )
    storage, path = run.uri_of("tune"), run.uri_of(f"tune/{EXPERIMENT}")
    bar = progress("tune", None, "trials")
    if tune.Tuner.can_restore(path):
        log.info("tune: resuming the interrupted sweep at %s", path, extra=STORY)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        log.info(
            "tune: %s of %s (%s search, ASHA grace %d / factor %d, %d concurrent)",
            f"{repeats} trials per grid point" if space.is_grid else f"{tu.num_samples} samples",
            space.source,
            search_name,
            grace,
            tu.reduction_factor,
            concurrent,
            extra=STORY,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space,
            tune_config=tune.TuneConfig(
                metric=tu.metric,
                mode=tu.mode,
                num_samples=tune_samples,
                max_concurrent_trials=concurrent,
                scheduler=scheduler,
                search_alg=search_alg,
            ),
            run_config=tune.RunConfig(
                storage_path=storage,
                name=EXPERIMENT,
                callbacks=[*tune_loggers(cfg.tracking, run), trial_progress(tu.metric)],
                # Tune's status tables go to the log with the rest of Ray's output; -v shows them.
                verbose=None if console.verbose() else 0,
            ),
        )
    with bar:
        grid = tuner.fit()
    params = list(space.params)
    rows = result_rows(grid, space, tu.metric, tu.mode)
    if not rows or all(r[tu.metric] is None for r in rows):
        errors = [str(r.error) for r in grid if r.error]
        raise RuntimeError(f"tune: no trial reported {tu.metric}; errors: {errors[:3]}")
    points = point_rows(rows, params, tu.metric, tu.mode)
    best = points[0]
    # The point's values on the job's own seeds (repeat 0's): a config, not one lucky trial.
    best_cfg = apply_values(
        cfg, {**{p: best[p] for p in params}, "run_dir": run.uri_of("tune/best_run")}, "best"
    )
    wall = time.perf_counter() - start
    summary = TuneSummary(rows, points, best, best_cfg, wall)
    write_results(run, summary, params, tu.metric, repeats > 1)
    print(results_markdown(summary, params, tu.metric, repeats > 1))
    log.info(
        "tune: done in %.1f s; best config %s", wall, run.uri_of("tune/best.yaml"), extra=STORY
    )
    return summary


def result_rows(grid, space: SearchSpace, metric: str, mode: str) -> list[dict[str, Any]]:
    """One row per trial: its values, repeat index, best dev metric, the epoch that reached it,
    epochs run and status, best first."""
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        values = df[metric].dropna() if df is not None and metric in df else None
        best = best_epoch = None
        if values is not None and len(values):
            at = values.idxmax() if mode == "max" else values.idxmin()
            best, best_epoch = float(values[at]), int(values.index.get_loc(at)) + 1
        rows.append(
            {
                "trial": (result.metrics or {}).get("trial_id") or result.path.rsplit("/", 1)[-1],
                **{p: result.config.get(p) for p in space.params},
                REPEAT: result.config.get(REPEAT, 0),
                metric: best,
                "best_epoch": best_epoch,
                "epochs": 0 if values is None else int(len(values)),
                "status": "error" if result.error else "done",
            }
        )
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: math.inf if r[metric] is None else sign * r[metric])


def columns(params: list[str], metric: str, repeats: bool) -> list[str]:
    trial = ["trial", *params, *([REPEAT] if repeats else [])]
    return [*trial, metric, "best_epoch", "epochs", "status"]


def point_records(points: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The per-point rows as the results write them: the metric in the column names."""
    return [
        {
            **{k: v for k, v in p.items() if k not in ("mean", "std", "trials")},
            f"{metric}_mean": p["mean"],
            f"{metric}_std": p["std"],
            "trials": " ".join(p["trials"]),
        }
        for p in points
    ]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown_table(cols: list[str], records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in records]
    return "\n".join(lines)


def results_markdown(summary: TuneSummary, params: list[str], metric: str, repeats: bool) -> str:
    """The per-trial table, and with repeats the per-point one (mean ± std over the repeats)."""
    text = _markdown_table(columns(params, metric, repeats), summary.rows)
    if repeats:
        spread = [
            {
                **p,
                metric: None
                if p["mean"] is None
                else _cell(p["mean"]) + ("" if p["std"] is None else f" ± {_cell(p['std'])}"),
            }
            for p in summary.points
        ]
        text += (
            f"\n\nPer grid point, {metric} mean ± sample std over its repeats (n: trials "
            f"with the metric):\n\n" + _markdown_table([*params, "n", metric, "failed"], spread)
        )
    return text


def _csv(cols: list[str], records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows({c: r[c] for c in cols} for r in records)
    return buf.getvalue()


def write_results(
    run: RunDir, summary: TuneSummary, params: list[str], metric: str, repeats: bool
) -> None:
    """results.md, results.csv (per trial), points.csv (per point) and best.yaml."""
    best = summary.best
    n, total = best["n"], best["n"] + best["failed"]
    if total > 1:
        stat, kind = f"{best['mean']:.4g}", "mean"
        if best["std"] is not None:
            stat, kind = f"{stat} ± {best['std']:.4g}", "mean ± sample std"
        of = f"{n} repeats" if n == total else f"{n} of its {total} repeats ({total - n} failed)"
        what = (
            f"Best grid point of the sweep in {run.uri}/tune ({metric} {stat}, {kind} over "
            f"{of}: trials {', '.join(best['trials'])}"
        )
    else:
        what = (
            f"Best trial {best['trials'][0]} of the sweep in {run.uri}/tune "
            f"({metric} {best['mean']:.4g}"
        )
    best_yaml = (
        f"# {what}, on the dev rerank set).\n"
        f"# Run it with: raykd run --config <this file>\n"
        + yaml.safe_dump(summary.best_config.model_dump(mode="json"), sort_keys=False)
    )
    points = point_records(summary.points, metric)
    for rel, text in (
        ("tune/results.md", results_markdown(summary, params, metric, repeats) + "\n"),
        ("tune/results.csv", _csv(columns(params, metric, repeats), summary.rows)),
        ("tune/points.csv", _csv(list(points[0]), points)),
        ("tune/best.yaml", best_yaml),
    ):
        run.write_text(rel, text)
