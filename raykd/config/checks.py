"""Constraints across sections: what one section's value means for another's.

Each is checked when the config is validated, so a job (or a sweep's trial) that cannot work
fails before any stage runs, naming the keys, instead of deep inside a stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raykd.config.sections import JobConfig


def cross_section_errors(job: JobConfig) -> list[str]:
    """One line per violated constraint, each naming the keys involved."""
    from raykd.config.specs import KlLoss

    c, a, ev, m = job.candidates, job.augment, job.eval, job.mining
    errors: list[str] = []
    if c.strategy == "dark":
        if not isinstance(job.train.loss, KlLoss):
            errors.append(
                f"train.loss.name {job.train.loss.name!r}: candidates.strategy 'dark' is "
                "distilled with kl (ADAM Eq. 9)"
            )
        if a.n_rein < c.m:
            errors.append(
                f"augment.n_rein {a.n_rein} < candidates.m {c.m}: a dark set twins each of its "
                "m negatives (ADAM §3.3)"
            )
        if c.n_masked is not None and c.n_masked > len(a.mask_ratios):
            errors.append(
                f"candidates.n_masked {c.n_masked} > {len(a.mask_ratios)} augment.mask_ratios: "
                "augment makes one masked positive per ratio"
            )
    stratified = c.strategy == "stratified" or (
        c.strategy == "dark" and c.dark_base == "stratified"
    )
    if stratified and c.n_strata > c.m:
        errors.append(
            f"candidates.n_strata {c.n_strata} > candidates.m {c.m}: some strata would get no "
            "negative, so the set would not span the score spectrum"
        )
    if "teacher_rerank" in ev.systems and ev.rerank_depth > ev.depth:
        errors.append(
            f"eval.rerank_depth {ev.rerank_depth} > eval.depth {ev.depth}: the rerank pool is "
            "cut from the first stage's run to eval.depth"
        )
    if c.on_short == "fail" and "file" not in m.sources:
        # A file pool's size is known only once read; the others are bounded here.
        cap = m.depth * sum(s in ("bm25", "dense") for s in m.sources)
        cap += m.n_random if "random" in m.sources else 0
        if c.m > cap:
            errors.append(
                f"candidates.m {c.m} > {cap}, the most negatives mining.sources {m.sources} can "
                "pool per query (mining.depth, mining.n_random); lower m or set "
                "candidates.on_short=fill"
            )
    if a.min_actors > a.max_actors:
        errors.append(f"augment.min_actors {a.min_actors} > augment.max_actors {a.max_actors}")
    mlflow = job.tracking.mlflow
    if mlflow is not None and mlflow.tracking_uri is None and _remote(job.run_dir):
        errors.append(
            f"tracking.mlflow.tracking_uri is null with run_dir {job.run_dir}: MLflow's "
            "embedded SQLite store needs a local run dir; give a server (http://host:5000) "
            "or a local sqlite:/// URI"
        )
    return errors


def _remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")
