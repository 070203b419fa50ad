"""The report's figures (matplotlib, object API on the Agg canvas: no pyplot global state).

Each ``plot_*`` writes one PNG and returns a ``FigureFile`` with its title and a caption that
states what was sampled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raykd.candidates.diagnostics import describe, pad_ragged
from raykd.report.sampling import KINDS, ScoreSample, TrainSample

KIND_LABELS = {
    "pos": "positive",
    "neg": "pool negative",
    "rein": "reinforced (p+ [SEP] p-)",
    "mask": "masked positive",
}
KIND_COLORS = {"pos": "#2ca02c", "neg": "#1f77b4", "rein": "#ff7f0e", "mask": "#9467bd"}
POOL_LABEL = "full pool"
POOL_COLOR = "#7f7f7f"
DOMINANCE = 20.0  # counts further apart than this get a log axis
DPI = 110
N_BINS = 60


@dataclass(frozen=True)
class FigureFile:
    """A figure the report embeds: its file, title and caption."""

    name: str  # file name inside the report folder
    title: str
    caption: str


def _save(fig: Figure, out_dir: Path, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(out_dir / name, dpi=DPI)


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _edges(values: Sequence[np.ndarray]) -> np.ndarray:
    allv = np.concatenate([v for v in values if v.size] or [np.zeros(1)])
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, N_BINS + 1)


def _chosen_by_kind(train: TrainSample) -> dict[str, np.ndarray]:
    teacher = np.concatenate(train.teacher) if train.teacher else np.empty(0)
    kinds = np.concatenate(train.kinds) if train.kinds else np.empty(0, dtype=object)
    return {k: teacher[kinds == k] for k in KINDS if (kinds == k).any()}


def plot_score_histograms(
    sample: ScoreSample, trains: Sequence[TrainSample], out_dir: Path
) -> FigureFile:
    """Raw teacher scores by kind over the whole scored pool, then per strategy the chosen
    candidates by kind over the pool's negatives (ADAM Fig. 1 / 3(b))."""
    present = [k for k in KINDS if sample.scores[k].size]
    edges = _edges(
        [sample.scores[k] for k in present]
        + [np.concatenate(t.teacher) for t in trains if t.teacher]
    )
    rows, cols = _grid(1 + len(trains), 3)
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows), layout="constrained")
    ax = fig.add_subplot(rows, cols, 1)
    totals = {k: sample.totals[k] for k in present}
    for k in present:
        s = sample.scores[k]
        # Scale the sample back to the artifact's row count, so kinds compare in size.
        weights = np.full(s.size, totals[k] / s.size)
        ax.hist(
            s,
            bins=edges,
            weights=weights,
            histtype="step",
            linewidth=1.6,
            color=KIND_COLORS[k],
            label=f"{KIND_LABELS[k]} ({totals[k]:,})",
        )
    if present and max(totals.values()) > DOMINANCE * max(1, min(totals.values())):
        ax.set_yscale("log")
    ax.set_title("All scored examples, by kind")
    ax.set_xlabel("raw teacher score")
    ax.set_ylabel("rows (estimated from the sample)")
    ax.legend(fontsize=7, framealpha=0.8)
    pool_neg = sample.scores["neg"]
    for i, train in enumerate(trains):
        ax = fig.add_subplot(rows, cols, i + 2)
        if pool_neg.size:
            ax.hist(
                pool_neg,
                bins=edges,
                density=True,
                color=POOL_COLOR,
                alpha=0.35,
                label="pool negatives (all)",
            )
        chosen = _chosen_by_kind(train)
        for k, s in chosen.items():
            ax.hist(
                s,
                bins=edges,
                density=True,
                histtype="step",
                linewidth=1.6,
                color=KIND_COLORS[k],
                label=f"chosen {KIND_LABELS[k]} ({s.size:,})",
            )
        dens = [np.histogram(s, bins=edges, density=True)[0] for s in chosen.values()]
        peaks = [d[d > 0] for d in dens if (d > 0).any()]
        if peaks and max(p.max() for p in peaks) > DOMINANCE * min(p.min() for p in peaks) * 5:
            ax.set_yscale("log")
        ax.set_title(f"{train.strategy}: chosen candidate sets")
        ax.set_xlabel("raw teacher score")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, framealpha=0.8)
    fig.suptitle("Teacher score distributions")
    name = "score_histograms.png"
    _save(fig, out_dir, name)
    sampled = ", ".join(
        f"{KIND_LABELS[k]} {sample.scores[k].size:,} of {sample.totals[k]:,}" for k in present
    )
    per_train = "; ".join(
        f"{t.strategy}: {len(t.teacher):,} of {t.total_rows:,} rows" for t in trains
    )
    caption = (
        "Raw teacher scores (logits, before any temperature). First panel: every scored example "
        "by kind, drawn from a uniform sample of at most "
        f"{sample.cap:,} rows per kind ({sampled}), weighted back to the artifact's row counts"
        + (
            ""
            if not trains
            else f". Other panels: the candidates each built strategy chose (positive first), as "
            f"densities over the pool negatives' density (grey), from a uniform sample of its "
            f"training rows ({per_train})"
        )
        + "."
    )
    return FigureFile(name, "Teacher scores by kind", caption)


def _set_diagnostics(sets: list[np.ndarray], temperature: float) -> dict[str, np.ndarray]:
    if not sets:
        return {"entropy": np.empty(0), "variance": np.empty(0), "range": np.empty(0)}
    return describe(*pad_ragged(sets), temperature=temperature)


DIAG_PANELS = (
    ("entropy", "entropy of softmax(teacher / T) [nats]"),
    ("variance", "variance of teacher scores"),
    ("range", "range (max − min) of teacher scores"),
)


def plot_set_diagnostics(
    sample: ScoreSample, trains: Sequence[TrainSample], out_dir: Path, temperature: float = 1.0
) -> FigureFile:
    """Per-query entropy (of the softmax the student is distilled towards: teacher scores over
    ``temperature``), variance and range of the candidate set, per strategy beside the full
    pool's."""
    groups = [(POOL_LABEL, _set_diagnostics(sample.pools, temperature))]
    groups += [(t.strategy, _set_diagnostics(t.teacher, temperature)) for t in trains]
    groups = [(label, d) for label, d in groups if d["entropy"].size]
    fig = Figure(figsize=(4.6 * len(DIAG_PANELS), 4.2), layout="constrained")
    for i, (key, label) in enumerate(DIAG_PANELS):
        ax = fig.add_subplot(1, len(DIAG_PANELS), i + 1)
        if groups:
            bp = ax.boxplot(
                [d[key] for _, d in groups],
                tick_labels=[g for g, _ in groups],
                patch_artist=True,
                showfliers=True,
                flierprops={"markersize": 2},
            )
            for patch, (g, _) in zip(bp["boxes"], groups, strict=True):
                patch.set_facecolor(POOL_COLOR if g == POOL_LABEL else "#aec7e8")
        ax.set_title(label)
        ax.set_ylabel(key)
        ax.tick_params(axis="x", labelrotation=20)
        if key != "entropy" and groups:
            spread = [d[key][d[key] > 0] for _, d in groups]
            spread = [s for s in spread if s.size]
            if spread and max(s.max() for s in spread) > DOMINANCE * min(s.min() for s in spread):
                ax.set_yscale("log")
    fig.suptitle("Teacher-score diagnostics of candidate sets, per query")
    name = "set_diagnostics.png"
    _save(fig, out_dir, name)
    sizes = "; ".join(f"{t.strategy}: {len(t.teacher):,} of {t.total_rows:,} rows" for t in trains)
    caption = (
        "Box plots over (query, positive) rows of the candidate set's teacher scores (positive "
        f"included): entropy of softmax(score / {temperature:g}), the distillation target at "
        "train.loss.teacher_temperature (bounded by log of the set size, so the larger full pool "
        "sits higher), population variance and range. Full pool = the "
        f"positive and every original negative, for {sample.n_queries:,} of "
        f"{sample.total_queries:,} queries sampled by a seeded hash of the qid"
        + (f"; strategies from uniform samples of their training rows ({sizes})" if trains else "")
        + "."
    )
    return FigureFile(name, "Candidate-set entropy, variance and range", caption)


def self_paced_cuts(conf: np.ndarray, epochs: int) -> list[float]:
    """Confidence thresholds of epoch t = 1..T: the (t / 2T)-quantile, so that the most
    confident 1 - t/(2T) lie at or above it (ADAM's keep ratio, over the whole set)."""
    if not conf.size:
        return []
    return [float(np.quantile(conf, t / (2 * epochs))) for t in range(1, epochs + 1)]


def plot_confidence(
    sample: ScoreSample, trains: Sequence[TrainSample], epochs: int, out_dir: Path
) -> FigureFile:
    """C(q) histograms with the self-paced cut of each epoch."""
    groups = [(POOL_LABEL, sample.pool_confidence)] + [(t.strategy, t.confidence) for t in trains]
    groups = [(g, c) for g, c in groups if c.size]
    rows, cols = _grid(max(1, len(groups)), 3)
    fig = Figure(figsize=(5.0 * cols, 3.7 * rows), layout="constrained")
    colors = colormaps["plasma"](np.linspace(0.1, 0.8, epochs))
    for i, (label, conf) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.hist(
            conf,
            bins=N_BINS,
            color=POOL_COLOR if label == POOL_LABEL else "#aec7e8",
            edgecolor="white",
            linewidth=0.3,
        )
        for t, (cut, color) in enumerate(
            zip(self_paced_cuts(conf, epochs), colors, strict=True), start=1
        ):
            keep = 1 - t / (2 * epochs)
            ax.axvline(
                cut,
                color=color,
                linestyle="--",
                linewidth=1.4,
                label=f"epoch {t}: keep {keep:.0%} (C ≥ {cut:.3g})",
            )
        ax.set_title(f"{label}: teacher confidence C(q)")
        ax.set_xlabel("C(q) = log softmax of the positive (0 = certain)")
        ax.set_ylabel("rows")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Teacher confidence and the self-paced cut per epoch (T = {epochs})")
    name = "confidence.png"
    _save(fig, out_dir, name)
    caption = (
        "C(q): log softmax at temperature 1 of the positive's teacher score against the "
        "original negatives of the set (ADAM Eq. 7; reinforced and masked rows are not "
        "counted). Dashed lines: the confidence cut of self-paced selection in epoch t of T, "
        "the (t/2T)-quantile, keeping the most confident 1 − t/(2T). Training applies it "
        "within each batch; here it is computed over the whole sampled set, as an "
        f"illustration. Full pool: {sample.n_queries:,} sampled queries; strategies: the same "
        "row samples as above."
    )
    return FigureFile(name, "Teacher confidence and self-paced selection", caption)
