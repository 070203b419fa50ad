"""``raykd plan``: a job's cost before launch (pairs, FLOPs, device-hours, stage times, index
memory, artifact sizes), from counts, model configs and a hardware table."""

from __future__ import annotations

from raykd.config import JobConfig
from raykd.planning.hardware import parse_hardware
from raykd.planning.inputs import Given, read_counts, read_lengths, read_measured
from raykd.planning.plan import Plan, Planner
from raykd.run_dir import RunDir

__all__ = ["Given", "format_plan", "make_plan"]


def make_plan(
    cfg: JobConfig,
    hardware: str,
    run: RunDir | None,
    given: Given,
    measured: str | None = None,
    target_hours: float = 1.0,
) -> Plan:
    """The plan of ``cfg`` on ``hardware`` (see ``parse_hardware``), counts and lengths read
    from ``run`` where it has them."""
    hw = parse_hardware(hardware)
    counts = read_counts(cfg, run, given)
    lengths = read_lengths(cfg, run, given)
    rates = read_measured(measured)
    return Planner(cfg, hw, counts, lengths, rates, target_hours).build()


def format_plan(plan: Plan) -> str:
    """A markdown table, one row per figure."""
    lines = [
        f"plan on {plan.hardware}",
        "",
        "| stage | item | value | basis |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in plan.rows]
    return "\n".join(lines)
