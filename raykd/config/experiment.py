"""The job config's sections about running experiments rather than a pipeline stage: a Ray Tune
sweep and where metrics are tracked."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from raykd.config.specs import MlflowSpec, Section, Seed, WandbSpec


class TuneSection(Section):
    """A Ray Tune sweep: the metric, the search, ASHA and the per-epoch dev set."""

    metric: str = "nDCG@10"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(
        8,
        ge=1,
        description="Pure-grid space: trials per grid point, repeat k with train.seed and "
        "candidates.seed + k (results: mean ± std per point; best.yaml: best mean). Space with "
        "a sampled parameter: configs sampled (x the grid, if any), all on the job's seeds. A "
        "seed the space names is left to it.",
    )
    max_concurrent_trials: int | None = Field(None, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    search: Literal["auto", "optuna", "random"] = Field(
        "auto", description="auto: Optuna when installed and the space has no grid, else random."
    )
    seed: Seed = 0
    dev_queries: int = Field(
        100, ge=1, description="Eval-split queries in the per-epoch dev rerank set of a sweep."
    )
    dev_depth: int = Field(50, ge=1, description="BM25 candidates reranked per dev query.")
    dev_set: str | None = Field(
        None,
        description="Dev rerank set (JSON URI; the sweep sets it per trial): when set, the "
        "train loop reports tune.metric on it after every epoch.",
    )


class TrackingSection(Section):
    """Where train metrics (per optimizer step) and eval metrics go besides the log."""

    tensorboard: bool = Field(
        True, description="TensorBoard event files in <run_dir>/tracking/tensorboard/<run>."
    )
    mlflow: MlflowSpec | None = Field(
        None, description="MLflow (pip install 'raykd[mlflow]'); null: off, {}: the defaults."
    )
    wandb: WandbSpec | None = Field(
        None, description="W&B (pip install 'raykd[wandb]'); null: off, {}: the defaults."
    )

    @field_validator("mlflow", "wandb", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        # ``--set tracking.mlflow=true`` turns a tracker on with its defaults.
        return {} if v is True else None if v is False else v
