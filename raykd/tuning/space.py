"""Search-space files: which config fields a Tune sweep samples, and from what.

A space file (``tune_spaces/*.yaml``) is a mapping from a dotted config path to one distribution:

    train.lambda_sup: {loguniform: [0.001, 0.5]}   # log-uniform float in [lo, hi]
    train.lr: {uniform: [1.0e-5, 1.0e-4]}          # uniform float in [lo, hi]
    train.epochs: {randint: [1, 4]}                # integer in [lo, hi) (hi excluded, as Tune)
    candidates.m: {choice: [5, 10, 20]}            # one of the values, sampled
    candidates.strategy: {grid: [topk, dark]}      # every value (see below for num_samples)

Trials re-run only build -> train -> eval on cached teacher scores, so only the sections those
stages read (and nothing upstream of the teacher scores) may be tuned. Every path is checked
against ``JobConfig`` and every value it can take is applied to the base config, so a typo or a
value of the wrong type fails before the sweep starts, naming the file and the key.

``tune.num_samples`` repeats each point of a pure grid with distinct seeds, and is the number of
samples of a space with a sampled parameter: the rule is in ``raykd.tuning.repeats``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raykd.config import ConfigError, JobConfig, validate

# Sections read by build/train/eval and by no stage up to score (see raykd.stages.pipeline.STAGES).
TUNABLE_SECTIONS = ("candidates", "student", "train", "eval")
KINDS = ("loguniform", "uniform", "randint", "choice", "grid")


@dataclass(frozen=True)
class Dist:
    """One parameter's distribution in a search-space YAML (``kind`` and its arguments)."""

    kind: str
    args: tuple[Any, ...]

    def probe_values(self) -> list[Any]:
        """Values the distribution can produce that suffice to type-check it against the config."""
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "randint":
            return tune.randint(*self.args)
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return tune.grid_search(list(self.args))


@dataclass(frozen=True)
class SearchSpace:
    """A search space: dotted config path -> distribution, from ``source``."""

    source: str
    params: dict[str, Dist]

    @property
    def has_grid(self) -> bool:
        return any(d.kind == "grid" for d in self.params.values())

    @property
    def is_grid(self) -> bool:
        """Every parameter a grid: the space's points are fixed, so num_samples repeats them."""
        return all(d.kind == "grid" for d in self.params.values())

    def to_tune(self) -> dict[str, Any]:
        """Tune's ``param_space``: flat, keyed by dotted config path."""
        return {path: d.to_tune() for path, d in self.params.items()}


def apply_values(cfg: JobConfig, values: dict[str, Any], source: str = "<values>") -> JobConfig:
    """``cfg`` with each dotted path set to its value, re-validated (ConfigError on a bad one)."""
    raw = cfg.model_dump(mode="json")
    for path, value in values.items():
        node = raw
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return validate(raw, source)


def _is_field(path: str) -> bool:
    model: Any = JobConfig
    for part in path.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    # A whole section is not a value to sample.
    return getattr(model, "model_fields", None) is None


def _parse_dist(source: str, path: str, spec: Any) -> Dist:
    where = f"{source}: {path}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one of {{{', '.join(KINDS)}: ...}}, got {spec!r}")
    ((kind, args),) = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution {kind!r} (known: {', '.join(KINDS)})")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} needs a non-empty list")
    if kind in ("loguniform", "uniform", "randint"):
        if len(args) != 2:
            raise ConfigError(f"{where}: {kind} needs [lo, hi], got {args!r}")
        number = int if kind == "randint" else (int, float)
        if not all(isinstance(a, number) and not isinstance(a, bool) for a in args):
            kind_of = "integers" if kind == "randint" else "numbers"
            raise ConfigError(f"{where}: {kind} bounds must be {kind_of}, got {args!r}")
        lo, hi = args
        if not lo < hi:
            raise ConfigError(f"{where}: {kind} needs lo < hi, got {args!r}")
        if kind == "loguniform" and lo <= 0:
            raise ConfigError(f"{where}: loguniform needs lo > 0, got {args!r}")
    return Dist(kind, tuple(args))


def load_space(path: str | Path, base: JobConfig) -> SearchSpace:
    """Parse and check a space file against ``base`` (the job config the sweep starts from)."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: search-space file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: expected a mapping of dotted config paths to distributions")
    params: dict[str, Dist] = {}
    for key, spec in raw.items():
        key = str(key)
        if not _is_field(key):
            raise ConfigError(f"{source}: {key}: not a config field of JobConfig")
        if key.split(".")[0] not in TUNABLE_SECTIONS:
            raise ConfigError(
                f"{source}: {key}: cannot be tuned (trials re-run only build, train and eval; "
                f"tunable sections: {', '.join(TUNABLE_SECTIONS)})"
            )
        params[key] = _parse_dist(source, key, spec)
    _check_values(base, params, source)
    return SearchSpace(source, params)


MAX_COMBINATIONS = 10_000


def _check_values(base: JobConfig, params: dict[str, Dist], source: str) -> None:
    """Every combination of the values each parameter can take (a range's ends) applied
    together: a trial must never fail on a pairing (dark sets and n_masked, strata and m) deep
    in a stage, after the sweep has started. A space too wide for that is checked value by
    value."""
    keys = list(params)
    grids = [params[k].probe_values() for k in keys]
    if math.prod(len(g) for g in grids) > MAX_COMBINATIONS:
        combos = [{k: v} for k, grid in zip(keys, grids, strict=True) for v in grid]
    else:
        combos = [dict(zip(keys, c, strict=True)) for c in itertools.product(*grids)]
    for values in combos:
        try:
            apply_values(base, values, source)
        except ConfigError as err:
            raise _explain(base, values, source, err) from None


def _explain(base: JobConfig, values: dict[str, Any], source: str, err: ConfigError) -> ConfigError:
    """The error naming one value when it is invalid on its own, else the combination."""
    for key, value in values.items():
        try:
            apply_values(base, {key: value}, source)
        except ConfigError as alone:
            return ConfigError(f"{source}: {key}: value {value!r} is invalid\n{alone}")
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return ConfigError(f"{source}: the values {shown} make an invalid config\n{err}")
