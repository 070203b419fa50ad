"""What a person sees: raykd's story on the console, everything else in the command's log file.

The console gets a stage's start and end lines (``[5/8] score: 22,875 pairs, 1,860 pairs/s,
12.3 s``), warnings and errors, and a live progress bar for the long stages (tqdm, on a terminal)
or a heartbeat line at most every ``HEARTBEAT_S`` (off a terminal: CI logs, ``ray job logs``).
A log record reaches it at WARNING and up, or when logged with ``extra=STORY``.

Everything else goes to the log file only: raykd's INFO lines, Ray's and Ray Data's loggers, the
Ray workers' output (``raykd.on_ray.session`` hands raykd's own lines to ``worker_line``) and,
from the CLI, whatever Ray's C++ core writes to the process's stderr. ``-v`` brings it all back
to the console.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import IO, Any

log = logging.getLogger(__name__)

# Pass as ``log.info(..., extra=STORY)``: the record belongs on the console.
STORY = {"console": True}
HEARTBEAT_S = 30.0
# Worker lines that raykd's train loop prints on rank 0 (raykd.training.loop).
WORKER_PREFIX = "[raykd] "
_STEP = re.compile(r"\bstep=(\d+)\b")

_state: dict[str, Any] = {"verbose": False, "stream": None, "progress": None}


def stream() -> IO[str]:
    """Where console lines go: the terminal's stderr as the CLI found it."""
    return _state["stream"] or sys.stderr


def verbose() -> bool:
    return bool(_state["verbose"])


class _StoryFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Other libraries' warnings are in the log file: on the console they would read as
        # raykd's.
        if not record.name.startswith("raykd") or record.name.endswith(".workers"):
            return False
        return record.levelno >= logging.WARNING or getattr(record, "console", False)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"raykd: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"raykd: warning: {msg}"
        return msg


class _BarSafeHandler(logging.StreamHandler):
    """Writes through tqdm when a bar is live, so the bar is redrawn below the line."""

    def emit(self, record: logging.LogRecord) -> None:
        bar = _state["progress"]
        if bar is None or bar._bar is None:
            super().emit(record)
            return
        try:
            bar._bar.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def console_handler(verbose_: bool, out: IO[str] | None = None) -> logging.Handler:
    """The console's logging handler: the story only, or (verbose) every record in full."""
    _state["verbose"] = verbose_
    _state["stream"] = out
    handler = _BarSafeHandler(out or sys.stderr)
    if verbose_:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S")
        )
    else:
        handler.addFilter(_StoryFilter())
        handler.setFormatter(_ConsoleFormatter())
    return handler


class Progress:
    """One long piece of work counted in ``unit``: a live tqdm bar on a terminal, else a
    heartbeat line at most every ``HEARTBEAT_S``. Thread-safe: Ray's log thread updates the
    training bar."""

    def __init__(self, label: str, total: int | None, unit: str) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._lock = threading.Lock()
        out = stream()
        self.tty = bool(getattr(out, "isatty", lambda: False)()) and not verbose()
        self._bar = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=out, leave=False)

    def update(self, n: int) -> None:
        """Add ``n`` units."""
        self.set(self.done + n)

    def set(self, done: int) -> None:
        """Set the units done so far (a worker's step counter)."""
        with self._lock:
            if done <= self.done:
                return
            if self._bar is not None:
                self._bar.update(done - self.done)
            self.done = done
            now = time.perf_counter()
            if self._bar is None and now - self._last >= HEARTBEAT_S:
                self._last = now
                log.info("  %s", self.describe(), extra=STORY)

    def describe(self) -> str:
        elapsed = time.perf_counter() - self.start
        of = f"/{self.total:,}" if self.total else ""
        rate = rate_text(self.done, elapsed, self.unit)
        return f"{self.label}: {self.done:,}{of} {self.unit}{rate}, {elapsed:.0f} s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        self._outer = _state["progress"]
        _state["progress"] = self
        return self

    def __exit__(self, *exc: object) -> None:
        _state["progress"] = self._outer
        self.close()


def rate_text(n: float, seconds: float, unit: str) -> str:
    """``, 1,860 pairs/s`` with three significant digits below 100/s; empty when meaningless."""
    if not n or seconds < 0.5:
        return ""
    rate = n / seconds
    shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
    return f", {shown} {unit}/s"


def current() -> Progress | None:
    """The live bar, if any (for callbacks that must not hold one: Tune pickles its callbacks)."""
    return _state["progress"]


def progress(label: str, total: int | None, unit: str) -> Progress:
    """``with progress("score", n, "pairs") as bar: ... bar.update(k)``."""
    return Progress(label, total, unit)


def to_driver(text: str) -> None:
    """A line for the driver's console, written on a Ray Train worker (``worker_line`` reads it).
    Written to stdout, not printed: Ray Train's worker print patch both prints and logs a line
    when Ray has wrapped stdout, as it does, so the driver got every ``print`` twice."""
    sys.stdout.write(f"{WORKER_PREFIX}{text}\n")
    sys.stdout.flush()


def worker_line(line: str) -> None:
    """A line raykd's code printed on a Ray worker (without ``WORKER_PREFIX``): a step report
    moves the live bar; a resume is part of the story."""
    bar = _state["progress"]
    step = _STEP.search(line)
    if bar is not None and step is not None:
        bar.set(int(step.group(1)))
    elif "resumed at step" in line:
        log.info("%s", line, extra=STORY)
