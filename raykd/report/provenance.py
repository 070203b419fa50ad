"""A run's provenance from its manifests (and its nested runs'): models, input-data hashes,
stage configs, package versions, wall times and row counts."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raykd.report.results import nested_runs
from raykd.run_dir import MANIFESTS, RunDir

MODEL_KEYS = ("model", "tokenizer")


@dataclass
class StageRecord:
    """One committed stage of a run (or a nested trial run), from its manifest."""

    run: str  # "." or the nested run's folder
    stage: str
    fingerprint: str
    wall_time_s: float | None
    finished_at: str
    rows: dict[str, int]
    config: dict[str, Any]
    info: dict[str, Any]


@dataclass
class Provenance:
    """What a report's results came from: stages, models, data files, package versions."""

    stages: list[StageRecord]
    models: dict[str, str]  # dotted config path -> model reference
    data_files: dict[str, Any]  # prepare's inputs.files (paths -> hashes)
    packages: dict[str, dict[str, str]]  # package -> {version: stages that ran with it}


def _models(config: dict[str, Any], prefix: str, out: dict[str, str]) -> None:
    for k, v in config.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            _models(v, f"{path}.", out)
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    _models(item, f"{path}[{i}].", out)
        elif k in MODEL_KEYS and v:
            out[path] = str(v)


def read_provenance(run: RunDir, stages_in_order: Sequence[str]) -> Provenance:
    """Every manifest of the run and of the runs nested under it (``StageRecord.run``), stage by
    stage in ``stages_in_order`` (the pipeline's)."""
    stages, models, data_files = [], {}, {}
    packages: dict[str, dict[str, str]] = {}
    for run_rel in nested_runs(run):
        for name in stages_in_order:
            rel = posixpath.join(run_rel, MANIFESTS, f"{name}.json")
            if not run.exists(rel):
                continue
            m = run.read_json(rel)
            inputs = m.get("inputs", {})
            config = inputs.get("config", {})
            _models(config, "", models)
            if name == "prepare" and not run_rel:
                data_files = inputs.get("files", {}) or {}
            label = f"{run_rel}: {name}" if run_rel else name
            for pkg, version in (m.get("packages") or {}).items():
                seen = packages.setdefault(pkg, {})
                seen[version] = f"{seen[version]}, {label}" if version in seen else label
            stages.append(
                StageRecord(
                    run=run_rel or ".",
                    stage=name,
                    fingerprint=str(m.get("fingerprint", ""))[:12],
                    wall_time_s=m.get("wall_time_s"),
                    finished_at=str(m.get("finished_at", "")),
                    rows=m.get("rows") or {},
                    config=config,
                    info=m.get("info") or {},
                )
            )
    return Provenance(stages=stages, models=models, data_files=data_files, packages=packages)
