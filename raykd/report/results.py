"""The effectiveness table: every evaluated run found in a run dir, grouped and averaged.

A run dir may hold, besides its own ``metrics.json``, nested runs that read its artifacts (Tune
trials, a benchmark's per-strategy/per-seed runs), each with its own ``metrics.json`` and
``manifests/``. Students are grouped by their strategy and the config of build/train/eval with
the seeds left out, so repeated seeds average into one row (mean ± std); baselines (BM25, the
init, the teacher) are grouped by system name.
"""

from __future__ import annotations

import json
import posixpath
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from raykd.errors import InputError
from raykd.evaluation.table import systems_of as eval_systems
from raykd.run_dir import MANIFESTS, RunDir

# Folders of a run dir that hold artifacts, never nested runs.
ARTIFACT_DIRS = frozenset(
    {
        "corpus",
        "queries",
        "qrels",
        "pool",
        "examples",
        "scores",
        "train",
        "student",
        "checkpoints",
        "runs",
        "report",
        "manifests",
        "teacher_model",
        ".staging",
    }
)
MAX_DEPTH = 3
SEED_KEYS = ("seed",)
BASELINES = {
    "bm25": "BM25",
    "init": "init (student before training)",
    "teacher_rerank": "teacher (reranking)",
}
STUDENT = "student"


@dataclass
class EvalRun:
    """One evaluated run (the run dir or a nested one) and its student's settings."""

    rel: str  # relative to the report's run dir; "" for the run itself
    metrics: dict[str, dict[str, float]]  # system -> measure -> value
    strategy: str | None  # of the student, from the run's train manifest
    config: dict[str, Any]  # the student's build/train config, seeds removed
    seeds: dict[str, Any] = field(default_factory=dict)
    split: str = ""  # the eval split and its judged queries, as metrics.json records them
    n_judged: int | None = None


@dataclass
class TableRow:
    """One row of the report's results table: a system over one or more runs."""

    label: str
    kind: str  # "student" or "baseline"
    values: dict[str, list[float]]  # measure -> one value per run
    runs: list[str]

    def cell(self, measure: str) -> str:
        vals = self.values.get(measure, [])
        if not vals:
            return "–"
        if len(vals) == 1:
            return f"{vals[0]:.4f}"
        return f"{statistics.fmean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def systems_of(metrics: Any, path: str) -> dict[str, dict[str, float]]:
    """system -> {measure: value} of a metrics.json (its ``systems`` row order when given)."""
    if not isinstance(metrics, dict):
        raise InputError(path, "expected a JSON object")
    out: dict[str, dict[str, float]] = {}
    for system in eval_systems(metrics):
        vals = metrics.get(system)
        if not isinstance(vals, dict):
            raise InputError(path, f"system {system!r} has no measures")
        out[system] = {m: float(v) for m, v in vals.items() if isinstance(v, int | float)}
    if not any(out.values()):
        raise InputError(path, "no system with numeric measures")
    return out


def _strip_seeds(node: Any, seeds: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in SEED_KEYS:
            seeds[f"{prefix}{k}"] = v
        else:
            out[k] = _strip_seeds(v, seeds, f"{prefix}{k}.")
    return out


def read_eval_run(run: RunDir, rel: str) -> EvalRun:
    """The EvalRun at ``rel`` under ``run``: its metrics.json and its student's build/train
    config from the manifests.
    """

    def join(path: str) -> str:
        return _join(rel, path)

    raw = run.read_json(join("metrics.json"))
    metrics = systems_of(raw, run.uri_of(join("metrics.json")))
    strategy, config, seeds = None, {}, {}
    for stage in ("train", "build"):
        path = join(f"{MANIFESTS}/{stage}.json")
        if run.exists(path):
            cfg = run.read_json(path).get("inputs", {}).get("config", {})
            strategy = cfg.get("candidates", {}).get("strategy", strategy)
            config = _strip_seeds(cfg, seeds)
            break
    eval_manifest = join(f"{MANIFESTS}/eval.json")
    if run.exists(eval_manifest):
        ecfg = run.read_json(eval_manifest).get("inputs", {}).get("config", {})
        config = {**config, "eval": _strip_seeds(ecfg.get("eval", {}), seeds, "eval.")}
    return EvalRun(
        rel=rel,
        metrics=metrics,
        strategy=strategy,
        config=config,
        seeds=seeds,
        split=str(raw.get("split", "")),
        n_judged=raw.get("n_judged"),
    )


def _join(rel: str, path: str) -> str:
    return posixpath.join(rel, path) if rel else path


def nested_runs(run: RunDir) -> list[str]:
    """The run itself ("") and every run dir nested under it (a folder with a ``manifests/``
    or a ``metrics.json``), breadth first, up to MAX_DEPTH deep, artifact folders skipped."""
    found = [""]
    frontier = [""]
    for _ in range(MAX_DEPTH):
        nxt = []
        for rel in frontier:
            sel = pafs.FileSelector(run.path(rel), allow_not_found=True)
            for info in run.fs.get_file_info(sel):
                if info.type == pafs.FileType.Directory and info.base_name not in ARTIFACT_DIRS:
                    nxt.append(_join(rel, info.base_name))
        frontier = sorted(nxt)
        found += [
            r
            for r in frontier
            if run.exists(_join(r, "metrics.json")) or run.exists(_join(r, MANIFESTS))
        ]
    return found


def find_eval_runs(run: RunDir) -> list[EvalRun]:
    """The run's own evaluation and those of the runs nested under it."""
    return [read_eval_run(run, r) for r in nested_runs(run) if run.exists(_join(r, "metrics.json"))]


def table_rows(runs: list[EvalRun]) -> list[TableRow]:
    """Students first (one row per strategy and seedless config), then the baselines."""
    groups: dict[tuple[str, str], TableRow] = {}
    for r in runs:
        for system, vals in r.metrics.items():
            if system == STUDENT:
                strategy = r.strategy or "student"
                key = (strategy, json.dumps(r.config, sort_keys=True, default=str))
                kind = "student"
            else:
                key = (system, "")
                kind = "baseline"
            row = groups.setdefault(key, TableRow(label=key[0], kind=kind, values={}, runs=[]))
            row.runs.append(r.rel or ".")
            for m, v in vals.items():
                row.values.setdefault(m, []).append(v)
    students = [r for r in groups.values() if r.kind == "student"]
    per_strategy: dict[str, int] = {}
    for r in students:
        per_strategy[r.label] = per_strategy.get(r.label, 0) + 1
    for r in students:
        if per_strategy[r.label] > 1:  # same strategy, different configs (e.g. Tune trials)
            r.label = f"{r.label} [{r.runs[0]}]"
    baselines = [r for r in groups.values() if r.kind == "baseline"]
    for r in baselines:
        r.label = BASELINES.get(r.label, r.label)
    order = {name: i for i, name in enumerate(BASELINES.values())}
    students.sort(key=lambda r: r.label)
    baselines.sort(key=lambda r: (order.get(r.label, len(order)), r.label))
    return students + baselines


def measure_order(rows: list[TableRow]) -> list[str]:
    """RR@k, nDCG@k, then recall cut-offs ascending, then anything else."""
    names = {m for r in rows for m in r.values}

    def key(m: str) -> tuple[int, int, str]:
        match = re.fullmatch(r"([A-Za-z]+)@(\d+)", m)
        family, k = (match.group(1), int(match.group(2))) if match else (m, 0)
        rank = {"RR": 0, "MRR": 0, "nDCG": 1, "R": 2, "Recall": 2}.get(family, 3)
        return rank, k, m

    return sorted(names, key=key)
