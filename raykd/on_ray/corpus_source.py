"""A Ray Data datasource that streams a corpus file, validating each line as it reads.

The driver never holds the corpus: each file is read by one task in blocks. Duplicate pids are
found with 128-bit hashes of the ids (16 bytes a passage, not the strings), checked when the
file ends, so the error can name both lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.datasource import FileBasedDatasource

from raykd.data.lines import iter_lines
from raykd.data.records import parse_jsonl, parse_tsv
from raykd.data.schemas import CORPUS
from raykd.errors import InputError

BLOCK_ROWS = 20_000


class DuplicateTracker:
    """Remembers id hashes with their line numbers; ``check`` names the first repeated id."""

    def __init__(self, path: str, unit: str = "line") -> None:
        self.path = path
        self.unit = unit
        self.digests = bytearray()
        self.lines: list[int] = []

    def add(self, rid: str, lineno: int) -> None:
        self.digests += hashlib.blake2b(rid.encode(), digest_size=16).digest()
        self.lines.append(lineno)

    def check(self, what: str) -> None:
        if not self.lines:
            raise InputError(self.path, "file has no records")
        keys = np.frombuffer(bytes(self.digests), dtype="<u8").reshape(-1, 2)
        order = np.lexsort((np.asarray(self.lines), keys[:, 1], keys[:, 0]))
        k = keys[order]
        same = np.flatnonzero((k[1:] == k[:-1]).all(axis=1))
        if same.size:
            lines = np.asarray(self.lines)[order]
            # The earliest repeat in file order is the most useful one to report.
            i = same[np.argmin(lines[same + 1])]
            first, again = int(lines[i]), int(lines[i + 1])
            where = {self.unit: again}
            raise InputError(self.path, f"duplicate {what} (first at {self.unit} {first})", **where)


class CorpusSource(FileBasedDatasource):
    """Corpus files (BEIR jsonl, MS MARCO tsv, or Parquet) to blocks of ``pid, text, title``."""

    def __init__(self, paths: str | list[str], fmt: str, **kwargs) -> None:
        if fmt == "parquet":
            kwargs.setdefault("file_extensions", ["parquet"])
        super().__init__(paths, **kwargs)
        self.fmt = fmt

    def _open_input_source(self, filesystem, path: str, **open_args):
        if self.fmt == "parquet":  # Parquet footers need random access
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        dups = DuplicateTracker(path, "row" if self.fmt == "parquet" else "line")
        rows = self._parquet_rows(f, path) if self.fmt == "parquet" else self._text_rows(f, path)
        batch: list[tuple[str, str, str]] = []
        for lineno, (pid, text, title) in rows:
            dups.add(pid, lineno)
            batch.append((pid, text, title))
            if len(batch) >= BLOCK_ROWS:
                yield _table(batch)
                batch = []
        dups.check("pid")
        if batch:
            yield _table(batch)

    def _text_rows(self, f, path: str) -> Iterator[tuple[int, tuple[str, str, str]]]:
        for lineno, line in iter_lines(f, path):
            if not line.strip():
                continue
            if self.fmt == "beir":
                yield lineno, parse_jsonl(line, path, lineno, with_title=True)
            else:
                pid, text = parse_tsv(line, path, lineno, 2, "pid, text")
                if not pid.strip():
                    raise InputError(path, "empty pid", line=lineno)
                if not text.strip():
                    raise InputError(path, "empty text", line=lineno)
                yield lineno, (pid, text, "")

    def _parquet_rows(self, f, path: str) -> Iterator[tuple[int, tuple[str, str, str]]]:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        missing = {"pid", "text"} - names
        if missing:
            raise InputError(path, f"missing column(s) {sorted(missing)}")
        row = 0
        for batch in pf.iter_batches(columns=[c for c in ("pid", "text", "title") if c in names]):
            cols = batch.to_pydict()
            titles = cols.get("title") or [""] * batch.num_rows
            for pid, text, title in zip(cols["pid"], cols["text"], titles, strict=True):
                row += 1
                if pid is None or not str(pid).strip():
                    raise InputError(path, "empty pid", row=row)
                if text is None or not str(text).strip():
                    raise InputError(path, "empty text", row=row)
                yield row, (str(pid), str(text), str(title or ""))


def _table(batch: list[tuple[str, str, str]]) -> pa.Table:
    pids, texts, titles = zip(*batch, strict=True)
    return pa.table([list(pids), list(texts), list(titles)], schema=CORPUS)
