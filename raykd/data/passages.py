"""The one text a passage is scored, encoded, indexed and mined as."""

from __future__ import annotations

from typing import Any


def passage_text(title: str | None, text: str) -> str:
    """The one text a passage is scored, encoded and indexed as."""
    return f"{title} {text}" if title else text


def passage_texts(batch: Any) -> list[str]:
    """``passage_text`` over an Arrow table or record batch with ``title`` and ``text`` columns."""
    titles = batch.column("title").to_pylist()
    texts = batch.column("text").to_pylist()
    return [passage_text(t, x) for t, x in zip(titles, texts, strict=True)]
