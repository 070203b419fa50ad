"""The console: raykd's story in a few lines, everything else in the command's log file."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from raykd import console
from raykd.stages.pipeline import STAGES

STAGE_NAMES = [s.name for s in STAGES if s.name != "teacher-train"]  # the demo's 8


@pytest.fixture
def story(monkeypatch):
    """A console handler (not verbose) writing to a buffer, on the root logger."""
    out = io.StringIO()
    handler = console.console_handler(False, out)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)
    console.console_handler(False)


def test_the_console_shows_the_story_warnings_and_nothing_else(story):
    logging.getLogger("raykd.stages.x").info("detail for the log file")
    logging.getLogger("raykd.stages.x").info("[2/8] mine: running", extra=console.STORY)
    logging.getLogger("raykd.stages.x").warning("3 queries have no positive")
    logging.getLogger("ray.data").warning("Ray Data's own warning")
    logging.getLogger("transformers").info("story-like", extra=console.STORY)
    assert story.getvalue().splitlines() == [
        "[2/8] mine: running",
        "raykd: warning: 3 queries have no positive",
    ]


def test_rates_read_well():
    assert console.rate_text(22875, 14.0, "pairs") == ", 1,634 pairs/s"
    assert console.rate_text(28, 57.3, "steps") == ", 0.489 steps/s"
    assert console.rate_text(0, 10.0, "steps") == ""
    assert console.rate_text(5, 0.1, "files") == ""  # too short to mean anything


def test_off_a_terminal_progress_is_a_heartbeat(story, monkeypatch):
    monkeypatch.setattr(console, "HEARTBEAT_S", 0.0)
    with console.progress("score", 100, "pairs") as bar:
        assert not bar.tty
        bar.update(40)
        bar.update(60)
        bar.set(50)  # never backwards
        assert bar.done == 100
    lines = story.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("  score: 40/100 pairs")
    monkeypatch.setattr(console, "HEARTBEAT_S", 30.0)
    with console.progress("score", 100, "pairs") as bar:
        bar.update(100)
    assert len(story.getvalue().splitlines()) == 2  # at most one line per 30 s


def test_worker_lines_drive_the_bar_and_go_to_the_log_file(story, caplog):
    """The lines Ray's driver receives from workers: raykd's step reports move the training
    bar, a resume is part of the story, and every line is in the log, none on the console."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    from raykd.on_ray.session import route_worker_output

    route_worker_output()
    caplog.set_level(logging.INFO)
    with console.progress("train", 28, "steps") as bar:
        global_worker_stdstream_dispatcher.emit(
            {
                "pid": 42,
                "actor_name": "RayTrainWorker",
                "is_err": False,
                "lines": [
                    "[raykd] resumed at step 14 ({'epochs_done': 1})",
                    "[raykd] loss=0.5 epoch=2 step=20 lr=0.001",
                    "Loading weights: 100%|##########| 39/39",
                ],
            }
        )
        assert bar.done == 20
    assert story.getvalue().splitlines() == ["resumed at step 14 ({'epochs_done': 1})"]
    logged = [r.getMessage() for r in caplog.records if r.name == "raykd.on_ray.session.workers"]
    assert logged[-1] == "(RayTrainWorker pid=42) Loading weights: 100%|##########| 39/39"


def test_raykd_demo_off_a_terminal(demo_cli_run):
    """``raykd demo`` as a new user runs it, with its output piped: one line per stage start and
    end, the results table once, the log's path once, last; Ray's output in that log. The same
    command again skips every stage and prints the table, once."""
    run, first, demo = demo_cli_run
    out = first.stdout
    print(out)
    assert first.returncode == 0, out
    lines = out.splitlines()
    assert len(lines) < 60, out
    n = len(STAGE_NAMES)
    for k, name in enumerate(STAGE_NAMES, 1):
        assert f"[{k}/{n}] {name}: running" in lines, name
        assert sum(line.startswith(f"[{k}/{n}] {name}: ") for line in lines) == 2, name
    # The count is the run's own (the demo's pool depends on bm25s' and numpy's versions).
    pairs = json.loads((run / "manifests" / "score.json").read_text())["rows"]["scores"]
    assert f"[4/8] score: {pairs:,} pairs, " in out
    assert out.count("system           RR@10") == 1
    assert sum(line.startswith("report: ") for line in lines) == 1
    (log_line,) = [line for line in lines if line.startswith("log: ")]
    assert lines[-1] == log_line
    log = Path(log_line.removeprefix("log: "))
    assert log.parent == run / "logs"
    text = log.read_text()
    assert "RayTrainWorker pid=" in text and "raykd.stages.pipeline INFO" in text
    # Each of the train loop's lines reached the driver once (Ray Train's print patch sent
    # every printed line twice).
    reports = [ln.split(" INFO ", 1)[1] for ln in text.splitlines() if "[raykd] " in ln]
    assert reports and len(reports) == len(set(reports)), reports
    assert "DeprecationWarning" not in text
    assert not re.search(r"\x1b\[|%\|", out), "no colour codes or progress-bar redraws"

    second = demo(300)
    again = second.stdout
    assert second.returncode == 0, again
    skipped = [line for line in again.splitlines() if line.endswith(": up to date, skipped")]
    assert [s.split()[1].rstrip(":") for s in skipped] == STAGE_NAMES
    assert again.count("system           RR@10") == 1
