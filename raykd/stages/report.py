"""The ``report`` stage: ``report/index.html`` with PNG figures beside it.

Reads the run's ``scores/``, every ``train/<strategy>/`` of the run and of the runs nested under
it (Tune trials, benchmark runs), their ``metrics.json`` and the manifests. Large artifacts are
sampled (``raykd.report.sampling``), never loaded whole; the sample sizes are in the captions.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs

from raykd.errors import StageError
from raykd.report.figures import plot_confidence, plot_score_histograms, plot_set_diagnostics
from raykd.report.html import render
from raykd.report.provenance import read_provenance
from raykd.report.results import find_eval_runs, nested_runs, table_rows
from raykd.report.sampling import sample_scores, sample_train
from raykd.run_dir import MANIFESTS, RunDir
from raykd.stages.pipeline import STAGES, StageContext, StageResult

log = logging.getLogger(__name__)

SCORES_PER_KIND = 200_000  # raw-score rows sampled per example kind
POOL_QUERIES = 2_000  # queries whose full pool is described
TRAIN_ROWS = 20_000  # rows sampled per train/<strategy>/
SAMPLE_SEED = 0


def train_sets(run: RunDir) -> dict[str, str]:
    """strategy -> its ``train/<strategy>`` folder: the run's own first, else the first nested
    run (sorted) that built it."""
    out: dict[str, str] = {}
    for rel in nested_runs(run):
        train = posixpath.join(rel, "train") if rel else "train"
        sel = pafs.FileSelector(run.path(train), allow_not_found=True)
        for info in sorted(run.fs.get_file_info(sel), key=lambda i: i.base_name):
            if info.type == pafs.FileType.Directory and not info.base_name.startswith("."):
                out.setdefault(info.base_name, f"{train}/{info.base_name}")
    return out


def train_epochs(run: RunDir, default: int) -> int:
    """T of self-paced selection: ``train.epochs`` of the first train manifest found."""
    for rel in nested_runs(run):
        path = posixpath.join(rel, MANIFESTS, "train.json") if rel else f"{MANIFESTS}/train.json"
        if run.exists(path):
            epochs = run.read_json(path).get("inputs", {}).get("config", {})
            epochs = epochs.get("train", {}).get("epochs")
            if isinstance(epochs, int) and epochs >= 1:
                return epochs
    return default


def write_report(
    run: RunDir, dest: Path, *, default_epochs: int = 1, temperature: float = 1.0
) -> dict[str, int]:
    """Write index.html and the PNGs into the local folder ``dest``; returns counts."""
    if not run.exists("scores"):
        raise StageError(f"report needs scores/ in {run.uri}; run the score stage first")
    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sample = sample_scores(run, per_kind=SCORES_PER_KIND, n_queries=POOL_QUERIES, seed=SAMPLE_SEED)
    trains = [
        sample_train(run, rel, rows=TRAIN_ROWS, seed=SAMPLE_SEED)
        for rel in train_sets(run).values()
    ]
    log.info(
        "report: sampled %s score rows and %d train sets in %.1f s",
        f"{sum(s.size for s in sample.scores.values()):,}",
        len(trains),
        time.perf_counter() - start,
    )
    epochs = train_epochs(run, default_epochs)
    figures = [
        plot_score_histograms(sample, trains, dest),
        plot_set_diagnostics(sample, trains, dest, temperature),
        plot_confidence(sample, trains, epochs, dest),
    ]
    evals = find_eval_runs(run)
    rows = table_rows(evals)
    notes = []
    if not trains:
        notes.append("No train/<strategy>/ folder found: the figures show the scored pool only.")
    html = render(
        run_uri=run.uri,
        figures=figures,
        rows=rows,
        evals=evals,
        prov=read_provenance(run, [s.name for s in STAGES]),
        notes=notes,
    )
    (dest / "index.html").write_text(html, encoding="utf-8")
    log.info(
        "report: %d figures, %d table rows from %d evaluations in %.1f s",
        len(figures),
        len(rows),
        len(evals),
        time.perf_counter() - start,
    )
    return {"figures": len(figures), "strategies": len(trains), "evaluations": len(evals)}


def run_report(ctx: StageContext) -> StageResult:
    with tempfile.TemporaryDirectory(prefix="raykd-report-") as tmp:
        counts = write_report(
            ctx.run,
            Path(tmp),
            default_epochs=ctx.cfg.train.epochs,
            temperature=ctx.cfg.train.teacher_temperature,
        )
        out = ctx.staging.path("report")
        ctx.run.fs.create_dir(out, recursive=True)
        files = sorted(Path(tmp).iterdir())
        for f in files:
            with ctx.run.fs.open_output_stream(f"{out}/{f.name}") as stream:
                stream.write(f.read_bytes())
    return StageResult(rows={"report": len(files)}, info=counts, count=(len(files), "files"))
