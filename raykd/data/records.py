"""Parsing one record (a JSONL or TSV line) into validated fields; shared by every reader."""

from __future__ import annotations

import json
from typing import Any

from raykd.errors import InputError


def _text(value: Any, what: str, path: str, lineno: int, *, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(path, f"{what} must be a string, got {type(value).__name__}", line=lineno)
    value = str(value)
    if not allow_empty and not value.strip():
        raise InputError(path, f"empty {what}", line=lineno)
    return value


def parse_jsonl(line: str, path: str, lineno: int, *, with_title: bool) -> tuple[str, ...]:
    """A BEIR record: ``{"_id", "text"[, "title"]}`` -> (id, text[, title])."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, f"bad JSON: {e.msg} (column {e.colno})", line=lineno) from None
    if not isinstance(obj, dict):
        raise InputError(path, "expected a JSON object", line=lineno)
    for key in ("_id", "text"):
        if key not in obj:
            raise InputError(path, f"missing {key!r}", line=lineno)
    rid = _text(obj["_id"], "_id", path, lineno)
    if not with_title:
        return rid, _text(obj["text"], "text", path, lineno)
    # BEIR documents may carry their words in the title alone (an empty text is valid there).
    title = _text(obj.get("title") or "", "title", path, lineno, allow_empty=True)
    return rid, _text(obj["text"], "text", path, lineno, allow_empty=bool(title.strip())), title


def parse_tsv(line: str, path: str, lineno: int, n_fields: int, names: str) -> list[str]:
    """Split one TSV line into exactly ``n_fields`` fields (``names`` for the error), or raise
    InputError naming ``path`` and ``lineno``.
    """
    fields = line.split("\t")
    if len(fields) != n_fields:
        raise InputError(
            path,
            f"expected {n_fields} tab-separated fields ({names}), got {len(fields)}",
            line=lineno,
        )
    return fields


def parse_rel(value: str, path: str, lineno: int) -> int:
    """A qrels relevance grade as an int, or InputError naming ``path`` and ``lineno``."""
    try:
        return int(value)
    except ValueError:
        raise InputError(path, f"relevance {value!r} is not an integer", line=lineno) from None
