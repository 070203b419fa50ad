"""Line-numbered, strictly decoded text lines from any binary stream (local file or pyarrow).

Decoding line by line lets a bad byte be reported with its line number. A UTF-8 BOM on the
first line and CRLF endings are accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import pyarrow.fs as pafs

from raykd.data.files import filesystem
from raykd.errors import InputError

_CHUNK = 1 << 20


def iter_lines(stream: BinaryIO, path: str) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, text)`` without line terminators; blank lines included."""
    pending = b""
    lineno = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        for raw in parts:
            lineno += 1
            yield lineno, _decode(raw, path, lineno)
    if pending:
        lineno += 1
        yield lineno, _decode(pending, path, lineno)


def _decode(raw: bytes, path: str, lineno: int) -> str:
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            path, f"not valid UTF-8 ({e.reason} at byte {e.start})", line=lineno
        ) from None


def open_input(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a local path or URI; a missing or empty file is an InputError."""
    fs, inner = filesystem(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise InputError(path, "file not found")
    if info.type == pafs.FileType.File and info.size == 0:
        raise InputError(path, "file is empty")
    return fs, inner


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """Stream the non-blank lines of a local file or URI, numbered as in the file."""
    fs, inner = open_input(path)
    seen = False
    with fs.open_input_stream(inner) as f:
        for lineno, text in iter_lines(f, path):
            if text.strip():
                seen = True
                yield lineno, text
    if not seen:
        raise InputError(path, "file has no records")
