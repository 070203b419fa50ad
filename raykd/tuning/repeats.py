"""Repeats in a sweep: which trials repeat a point, their seeds, and the mean ± std over them.

The rule for ``tune.num_samples`` and the seeds (``raykd tune``):

- **Pure grid** (every parameter of the space is ``{grid: [...]}``): ``num_samples`` is the number
  of repeats of each grid point. Repeat k (0-based) runs with ``train.seed + k`` and
  ``candidates.seed + k`` (the job's seeds + k): repeats differ in their seeds only, and a rerun
  of the sweep gives the same trials. ``num_samples: 1`` is one trial per point, on the job's
  seeds. (Ray Tune alone would repeat the whole grid ``num_samples`` times on identical configs.)
- **A space with a sampled parameter** (loguniform, uniform, randint, choice): ``num_samples``
  is the number of sampled configs (times the grid points, if the space also has a grid, as in
  Ray Tune). Every trial keeps the job's seeds, so that trials differ in their hyper-parameters
  only (common random numbers: the usual way to compare them fairly).
- A seed the space names itself (``train.seed`` or ``candidates.seed``) is the space's: a
  repeat offsets only the seeds the space does not name.

The results group trials by their tuned values: each point's n (trials with the metric), mean
and sample standard deviation (n - 1 in the denominator; none for n < 2). The best point is the
one with the best mean (for a sweep without repeats, the best trial).
"""

from __future__ import annotations

import json
import math
from typing import Any

from raykd.config import JobConfig
from raykd.tuning.space import SearchSpace

# A trial's repeat index in its Tune config. Not a dotted path, so never a config field.
REPEAT = "repeat"
SEED_FIELDS = ("train.seed", "candidates.seed")


def repeats_per_point(space: SearchSpace, num_samples: int) -> int:
    """Trials per point: ``num_samples`` for a pure grid, else 1 (see the module docstring)."""
    return num_samples if space.is_grid else 1


def param_space(space: SearchSpace, num_samples: int) -> tuple[dict[str, Any], int]:
    """Tune's ``param_space`` and ``num_samples`` for the rule: a pure grid with repeats gets
    one more grid dimension, the repeat index, and Tune's ``num_samples`` 1."""
    from ray import tune

    ps = space.to_tune()
    repeats = repeats_per_point(space, num_samples)
    if repeats > 1:
        return {**ps, REPEAT: tune.grid_search(list(range(repeats)))}, 1
    return ps, num_samples


def repeat_seeds(base: JobConfig, repeat: int, named: dict[str, Any]) -> dict[str, int]:
    """The seeds of repeat ``repeat``: each seed field not in ``named`` (the trial's tuned
    values) offset by ``repeat`` from the base job's."""
    return {f: int(base.subtree(f)) + repeat for f in SEED_FIELDS if f not in named}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); None where undefined (n = 0; std n < 2)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def point_rows(
    rows: list[dict[str, Any]], params: list[str], metric: str, mode: str
) -> list[dict[str, Any]]:
    """One row per point (distinct tuned values) from the per-trial ``rows``: the values, n
    (trials with the metric), failed (trials without), mean, std and the trial ids; best mean
    first, points without a mean last."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        key = json.dumps([r[p] for p in params], sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    points = []
    for members in groups.values():
        values = [r[metric] for r in members if r[metric] is not None]
        mean, std = mean_std(values)
        points.append(
            {
                **{p: members[0][p] for p in params},
                "n": len(values),
                "failed": len(members) - len(values),
                "mean": mean,
                "std": std,
                "trials": [r["trial"] for r in members],
            }
        )
    sign = -1.0 if mode == "max" else 1.0
    return sorted(points, key=lambda p: math.inf if p["mean"] is None else sign * p["mean"])
