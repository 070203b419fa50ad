"""What ``raykd plan`` reads: counts from the run dir's manifests (or given), token lengths
sampled from the prepared collection (or given), and a measured-rates file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from raykd.config import ConfigError, JobConfig
from raykd.planning.flops import TextLengths, sample_lengths
from raykd.planning.plan import Counts, estimate_pairs
from raykd.run_dir import MANIFESTS, RunDir

SAMPLE = 2000  # texts tokenised per side: the mean is then within ~2% for abstract lengths
RATES = (
    "score_flop_per_s",
    "encode_flop_per_s",
    "train_flop_per_s",
    "train_step_s",
    "pool_start_s",
    "train_start_s",
)


@dataclass(frozen=True)
class Given:
    """Counts and lengths given on the command line; None: read from the run dir."""

    passages: int | None = None
    train_queries: int | None = None
    eval_queries: int | None = None
    train_rows: int | None = None
    pairs: int | None = None
    query_tokens: float | None = None
    passage_tokens: float | None = None


def _manifest_rows(run: RunDir | None, stage: str) -> dict[str, int]:
    if run is None or not run.exists(f"{MANIFESTS}/{stage}.json"):
        return {}
    return run.read_json(f"{MANIFESTS}/{stage}.json").get("rows", {})


def read_counts(cfg: JobConfig, run: RunDir | None, given: Given) -> Counts:
    """Given counts first, then prepare's, build's and augment's manifests, then estimates."""
    prep = _manifest_rows(run, "prepare")
    sp = cfg.data.splits
    found = {
        "passages": prep.get("corpus"),
        "train_queries": prep.get(f"queries/{sp.train}"),
        "eval_queries": prep.get(f"queries/{sp.eval}"),
        "train_rows": _manifest_rows(run, "build").get(f"train/{cfg.candidates.strategy}")
        or prep.get(f"qrels/{sp.train}"),
        "pairs": _manifest_rows(run, "augment").get("examples"),
    }
    values = {
        k: getattr(given, k) if getattr(given, k) is not None else v for k, v in found.items()
    }
    flags = {
        "passages": "--passages",
        "train_queries": "--train-queries",
        "eval_queries": "--eval-queries",
    }
    missing = [flags[k] for k in flags if values[k] is None]
    if missing:
        where = f"{run.uri} has no prepare manifest" if run is not None else "no run dir"
        raise ConfigError(f"raykd plan: {where}; give {', '.join(missing)}")
    values["train_rows"] = values["train_rows"] or values["train_queries"]
    estimated = values["pairs"] is None
    if estimated:
        values["pairs"] = estimate_pairs(cfg, values["train_queries"], values["train_rows"])
    read = "run dir manifests" if any(v is not None for v in found.values()) else "given"
    pairs_from = "estimated from mining and augment" if estimated else read
    return Counts(**values, source=read, pairs_source=pairs_from)


def read_lengths(cfg: JobConfig, run: RunDir | None, given: Given) -> TextLengths:
    """Given lengths, else a sample of the prepared corpus and training queries tokenised with
    the student's tokenizer (the teacher's when there is no student), else the max lengths."""
    if given.query_tokens is not None or given.passage_tokens is not None:
        return TextLengths.fixed(given.query_tokens, given.passage_tokens)
    model = cfg.student.model or cfg.teacher.model
    split = f"queries/{cfg.data.splits.train}"
    if run is None or model is None or not (run.exists("corpus") and run.exists(split)):
        return TextLengths.fixed(None, None)
    import pyarrow.dataset as pads

    def head(rel: str) -> list[str]:
        ds = pads.dataset(run.path(rel), filesystem=run.fs, format="parquet")
        return ds.head(SAMPLE, columns=["text"])["text"].to_pylist()

    return sample_lengths(model, head(split), head("corpus"))


def read_measured(path: str | None) -> dict[str, float]:
    """The bench scripts' rates (``--measured-out``): a JSON object of RATES keys."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--measured {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--measured {path}: expected a JSON object of {', '.join(RATES)}")
    rates = {k: data[k] for k in RATES if k in data}
    bad = [
        k for k, v in rates.items() if not isinstance(v, int | float) or not v > 0 or math.isinf(v)
    ]
    if bad:
        raise ConfigError(f"--measured {path}: {', '.join(bad)} must be positive numbers")
    return {k: float(v) for k, v in rates.items()}


def write_measured(path: str, **rates: float) -> None:
    """Merge ``rates`` into the measured file at ``path`` (each bench script adds its own)."""
    file = Path(path)
    data = json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}
    data.update({k: round(v, 3) for k, v in rates.items()})
    file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
