"""The eval results as one plain-text table: systems as rows, measures as columns."""

from __future__ import annotations

from typing import Any


def systems_of(metrics: dict[str, Any]) -> list[str]:
    """Row order: ``metrics["systems"]`` when present, else every key holding numeric measures."""
    if "systems" in metrics:
        return list(metrics["systems"])
    return [
        k
        for k, v in metrics.items()
        if isinstance(v, dict) and v and all(isinstance(x, int | float) for x in v.values())
    ]


def format_table(metrics: dict[str, Any], digits: int = 4) -> str:
    """``metrics.json`` as a table (measures in ``metrics["measures"]`` order when given)."""
    systems = systems_of(metrics)
    if not systems:
        return "(no systems evaluated)"
    measures = list(metrics.get("measures") or [])
    for s in systems:
        measures.extend(m for m in metrics[s] if m not in measures)
    header = ["system", *measures]
    rows = [
        [s, *(f"{metrics[s][m]:.{digits}f}" if m in metrics[s] else "-" for m in measures)]
        for s in systems
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    title = []
    if "split" in metrics:
        n = metrics.get("n_judged")
        title.append(f"split {metrics['split']}" + (f" ({n} judged queries)" if n else ""))
    rule = "-" * len(line(header))
    return "\n".join([*title, line(header), rule, *(line(r) for r in rows)])
