"""The report page: one self-contained HTML file (inline CSS) linking the PNGs beside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from raykd.report.figures import FigureFile
from raykd.report.provenance import Provenance
from raykd.report.results import EvalRun, TableRow, measure_order

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { color: #555; background: #fafafa; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; margin-top: .4em; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
code { font-size: .9em; } .muted { color: #777; }
"""


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    num_from: int = 99,
    row_classes: Sequence[str] | None = None,
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        cells = "".join(
            f'<td class="num">{escape(c)}</td>' if j >= num_from else f"<td>{escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def metrics_section(rows: Sequence[TableRow], evals: Sequence[EvalRun]) -> str:
    """The HTML results table (one row per system, a column per measure)."""
    if not rows:
        return "<p class='muted'>No evaluation found (metrics.json): run the eval stage.</p>"
    measures = measure_order(list(rows))
    body = [[r.label, str(len(r.runs))] + [r.cell(m) for m in measures] for r in rows]
    runs = sorted({run for r in rows for run in r.runs})
    splits = sorted({(e.split, e.n_judged) for e in evals}, key=str)
    where = "; ".join(
        f"split {split or '?'}" + (f" ({n:,} judged queries)" if n else "") for split, n in splits
    )
    return (
        f"<p>Evaluated on {escape(where)}.</p>"
        + _table(
            ["system", "runs"] + measures, body, num_from=1, row_classes=[r.kind for r in rows]
        )
        + "<p class='muted'>Mean ± sample standard deviation over the runs of a row (seeds); "
        "students are grouped by strategy and seedless config. Evaluations read: "
        + ", ".join(f"<code>{escape(r)}</code>" for r in runs)
        + "</p>"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return json.dumps(v, default=str) if isinstance(v, dict | list) else str(v)


def provenance_section(p: Provenance) -> str:
    """The HTML provenance: models, data files, package versions, stages."""
    parts = ["<h3>Models</h3>"]
    parts.append(
        _table(["config field", "model"], sorted(p.models.items()))
        if p.models
        else "<p class='muted'>none recorded</p>"
    )
    parts.append("<h3>Input data</h3>")
    files = [[k, _fmt(v)] for k, v in sorted(p.data_files.items())]
    parts.append(
        _table(["input", "hash / stat"], files)
        if files
        else "<p class='muted'>no prepare manifest</p>"
    )
    parts.append("<h3>Stages</h3>")
    stage_rows = [
        [
            s.run,
            s.stage,
            s.fingerprint,
            "" if s.wall_time_s is None else f"{s.wall_time_s:,.1f}",
            ", ".join(f"{k}: {v:,}" for k, v in s.rows.items()),
            s.finished_at,
        ]
        for s in p.stages
    ]
    header = ["run", "stage", "fingerprint", "wall time (s)", "rows", "finished"]
    parts.append(_table(header, stage_rows))
    parts.append("<h3>Stage configs and info</h3>")
    for s in p.stages:
        blob = json.dumps(
            {"config": s.config, "info": s.info}, indent=2, sort_keys=True, default=str
        )
        summary = f"{escape(s.run)}: {escape(s.stage)}"
        parts.append(f"<details><summary>{summary}</summary><pre>{escape(blob)}</pre></details>")
    parts.append("<h3>Package versions</h3>")
    pkg_rows = [
        [pkg, ver, stages]
        for pkg, vers in sorted(p.packages.items())
        for ver, stages in vers.items()
    ]
    parts.append(_table(["package", "version", "stages"], pkg_rows))
    return "\n".join(parts)


def render(
    *,
    run_uri: str,
    figures: Sequence[FigureFile],
    rows: Sequence[TableRow],
    evals: Sequence[EvalRun],
    prov: Provenance,
    notes: Sequence[str] = (),
) -> str:
    """The whole report page."""
    figs = "\n".join(
        f'<figure><h3>{escape(f.title)}</h3><img src="{escape(f.name)}" alt="{escape(f.title)}">'
        f"<figcaption>{escape(f.caption)}</figcaption></figure>"
        for f in figures
    )
    note_html = "".join(f"<p class='muted'>{escape(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>raykd report</title>
<style>{CSS}</style></head><body>
<h1>raykd report</h1>
<p>Run: <code>{escape(run_uri)}</code></p>
{note_html}
<h2>Effectiveness</h2>
{metrics_section(rows, evals)}
<h2>Teacher scores</h2>
{figs}
<h2>Provenance</h2>
{provenance_section(prov)}
</body></html>
"""
