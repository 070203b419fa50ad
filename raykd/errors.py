"""Exceptions shared across raykd."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input data: names the file, the line or row, and what is wrong."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        message: str,
        line: int | None = None,
        row: int | None = None,
    ) -> None:
        # All arguments go to args so the exception pickles intact across Ray workers.
        super().__init__(str(path), message, line, row)
        self.path = str(path)
        self.message = message
        self.line = line
        self.row = row

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.path}:{self.line}: {self.message}"
        if self.row is not None:
            return f"{self.path}: row {self.row}: {self.message}"
        return f"{self.path}: {self.message}"


class StageError(RuntimeError):
    """A pipeline stage failed."""
