"""What the trackers record: metric names, and the points ``(step, {name: value})`` of a Ray
Train report and of an eval's metrics. Plain Python: no tracker and no Ray here."""

from __future__ import annotations

import math
import re
from typing import Any

# The report key of the per-optimizer-step records since the previous report (the train loop
# fills it, the Ray Train callback unpacks it): a point per step, however seldom the loop reports.
PER_STEP = "per_step"

# Characters TensorBoard (tensorboardX rewrites them) and MLflow (rejects them) do not take in a
# name, such as the '@' of nDCG@10: one rule for every tracker keeps the names the same in each.
_INVALID = re.compile(r"[^-/\w.]")

# A report's bookkeeping; with the keys of its step records, what is not a dev metric.
_WINDOW = ("step", "epoch", "lr", "loss", "samples_per_s", PER_STEP)


def metric_name(*parts: str) -> str:
    """The trackers' name of a metric: ``parts`` joined by '/', '@' and the like as '_'."""
    return _INVALID.sub("_", "/".join(parts))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def step_values(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """One step record's values under ``prefix``: loss and its parts, lr, samples/s, epoch, and
    the kept ratio in place of the kept and batch row counts (per worker, so not comparable
    across worker counts)."""
    values = {
        k: float(v) for k, v in record.items() if k not in ("step", "kept", "batch") and _number(v)
    }
    if record.get("batch") and "kept" in record:
        values["kept_ratio"] = record["kept"] / record["batch"]
    return {metric_name(prefix, k): v for k, v in values.items()}


def report_points(metrics: dict[str, Any], prefix: str = "train") -> list[tuple[int, dict]]:
    """The points of one Ray Train report (a worker's metrics dict): one per optimizer step in
    its ``PER_STEP`` records under ``prefix``, then the numbers that no step record carries (the
    epoch's dev metric, e.g. ``dev/nDCG_10``) at the report's step."""
    records = metrics.get(PER_STEP) or []
    points = [(int(r["step"]), step_values(r, prefix)) for r in records]
    window = {*_WINDOW, *(k for r in records for k in r)}
    extra = {
        metric_name("dev", k): float(v)
        for k, v in metrics.items()
        if k not in window and _number(v)
    }
    if extra:
        points.append((int(metrics["step"]), extra))
    return points


def eval_points(result: dict[str, Any]) -> dict[str, float]:
    """``eval/<system>/<measure>`` of an eval stage's metrics.json dict."""
    return {
        metric_name("eval", system, measure): float(value)
        for system in result["systems"]
        for measure, value in result[system].items()
        if _number(value) and math.isfinite(value)
    }


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config subtree as dotted keys (``train.lr``), the run's parameters in the trackers."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, path + "."))
        else:
            out[path] = value
    return out
