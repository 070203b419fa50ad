"""Readers for queries and qrels (small enough for the driver), validated as they read."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow.dataset as pads

from raykd.data.lines import open_input, read_lines
from raykd.data.records import parse_jsonl, parse_rel, parse_tsv
from raykd.errors import InputError

Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]


def read_queries(path: str, fmt: str) -> Queries:
    """``{qid: text}`` from BEIR jsonl, MS MARCO tsv or Parquet; duplicate qids are errors."""
    out: Queries = {}
    first_line: dict[str, int] = {}
    for lineno, qid, text in _query_records(path, fmt):
        if qid in out:
            unit = "row" if fmt == "parquet" else "line"
            raise InputError(
                path, f"duplicate qid {qid!r} (first at {unit} {first_line[qid]})", **{unit: lineno}
            )
        out[qid] = text
        first_line[qid] = lineno
    return out


def _query_records(path: str, fmt: str) -> Iterator[tuple[int, str, str]]:
    if fmt == "parquet":
        for row, rec in enumerate(_parquet_rows(path, ["qid", "text"]), start=1):
            qid, text = (str(v) if v is not None else "" for v in rec)
            if not qid.strip():
                raise InputError(path, "empty qid", row=row)
            if not text.strip():
                raise InputError(path, "empty text", row=row)
            yield row, qid, text
        return
    for lineno, line in read_lines(path):
        if fmt == "beir":
            qid, text = parse_jsonl(line, path, lineno, with_title=False)
        else:
            qid, text = parse_tsv(line, path, lineno, 2, "qid, text")
            if not qid.strip():
                raise InputError(path, "empty qid", line=lineno)
            if not text.strip():
                raise InputError(path, "empty text", line=lineno)
        yield lineno, qid, text


def read_qrels(path: str, fmt: str) -> tuple[Qrels, dict[tuple[str, str], int]]:
    """``{qid: {pid: rel}}`` and each judgement's line (for later unknown-id errors).

    BEIR: ``query-id corpus-id score`` with an optional header; MS MARCO: TREC ``qid 0 pid rel``.
    """
    qrels: Qrels = {}
    where: dict[tuple[str, str], int] = {}
    if fmt == "parquet":
        records = (
            (row, str(q), str(p), r)
            for row, (q, p, r) in enumerate(_parquet_rows(path, ["qid", "pid", "rel"]), start=1)
        )
    else:
        records = _text_qrels(path, fmt)
    unit = "row" if fmt == "parquet" else "line"
    for lineno, qid, pid, rel in records:
        if not isinstance(rel, int):
            rel = parse_rel(str(rel), path, lineno)
        docs = qrels.setdefault(qid, {})
        if pid in docs:
            raise InputError(
                path,
                f"duplicate judgement for ({qid!r}, {pid!r}) (first at {unit} {where[(qid, pid)]})",
                **{unit: lineno},
            )
        docs[pid] = rel
        where[(qid, pid)] = lineno
    return qrels, where


def _text_qrels(path: str, fmt: str) -> Iterator[tuple[int, str, str, int]]:
    for lineno, line in read_lines(path):
        fields = line.split()
        if fmt == "beir":
            if lineno == 1 and fields and fields[0] == "query-id":
                continue
            if len(fields) != 3:
                raise InputError(
                    path,
                    f"expected 3 fields (query-id corpus-id score), got {len(fields)}",
                    line=lineno,
                )
            qid, pid, rel = fields
        else:
            if len(fields) != 4:
                raise InputError(
                    path, f"expected 4 fields (qid 0 pid rel), got {len(fields)}", line=lineno
                )
            qid, _, pid, rel = fields
        yield lineno, qid, pid, parse_rel(rel, path, lineno)


def _parquet_rows(path: str, columns: list[str]) -> Iterator[tuple]:
    fs, inner = open_input(path)
    ds = pads.dataset(inner, filesystem=fs, format="parquet")
    missing = set(columns) - set(ds.schema.names)
    if missing:
        raise InputError(path, f"missing column(s) {sorted(missing)}")
    for batch in ds.to_batches(columns=columns):
        cols = [batch.column(c).to_pylist() for c in columns]
        yield from zip(*cols, strict=True)


def split_paths(fmt: str, root: str, split: str) -> tuple[str, str]:
    """(queries path, qrels path) of a split in a collection of the given format."""
    join = posixpath.join
    if fmt == "beir":
        return join(root, "queries.jsonl"), join(root, "qrels", f"{split}.tsv")
    if fmt == "msmarco":
        return join(root, f"queries.{split}.tsv"), join(root, f"qrels.{split}.tsv")
    return join(root, "queries", split), join(root, "qrels", split)


def corpus_path(fmt: str, root: str) -> str:
    """The corpus file of a collection folder in format ``fmt`` (beir, msmarco; else a Parquet
    folder ``corpus``).
    """
    return posixpath.join(
        root, {"beir": "corpus.jsonl", "msmarco": "collection.tsv"}.get(fmt, "corpus")
    )
