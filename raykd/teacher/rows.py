"""The rows a teacher scores: the query text joined by qid, the qid-hash shards, and the checks
on what comes back."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raykd.data.acero import group_by
from raykd.errors import InputError, StageError
from raykd.teacher.base import KEY_COLUMNS


def attach_queries(
    batch: dict[str, np.ndarray], *, queries: dict[str, str], source: str
) -> dict[str, np.ndarray]:
    """Add the ``query`` column by qid; an example of an unknown query is bad input."""
    qids = batch["qid"]
    texts = np.empty(len(qids), dtype=object)
    for i, qid in enumerate(qids):
        text = queries.get(qid)
        if text is None:
            raise InputError(source, f"qid {qid!r} (eid {batch['eid'][i]!r}) is not a query")
        texts[i] = text
    out = {k: batch[k] for k in (*KEY_COLUMNS, "text")}
    out["query"] = texts
    return out


def shard_of(qids: np.ndarray | list[str], n_shards: int) -> np.ndarray:
    """Stable shard per qid (crc32, identical across processes and Python versions)."""
    return np.fromiter(
        (zlib.crc32(str(q).encode("utf-8")) % n_shards for q in qids), dtype=np.int32
    )


def add_shard(batch: dict[str, np.ndarray], *, n_shards: int) -> dict[str, np.ndarray]:
    """``batch`` with a ``shard`` column: the qid's hash bucket among ``n_shards``."""
    out = dict(batch)
    out["shard"] = shard_of(batch["qid"], n_shards)
    return out


def check_scores(table: pa.Table, columns: tuple[str, ...] = ()) -> None:
    """Every score finite and every (qid, eid) once; names the offending example."""
    for col in ("score", *(f"score_{c}" for c in columns)):
        values = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise StageError(
                f"teacher gave a non-finite {col} ({values[i]}) for qid "
                f"{table['qid'][i].as_py()!r} eid {table['eid'][i].as_py()!r} "
                f"({bad.size} such rows)"
            )
    keys = group_by(table.select(["qid", "eid"]), ["qid", "eid"]).aggregate([([], "count_all")])
    dup = keys.filter(pc.greater(keys["count_all"], 1))
    if dup.num_rows:
        raise StageError(
            f"teacher returned qid {dup['qid'][0].as_py()!r} eid {dup['eid'][0].as_py()!r} "
            f"{dup['count_all'][0].as_py()} times"
        )


class ShardCollector:
    """Routes scored rows, arriving in any order and any batch size, to their qid-hash shard, and
    hands back each shard's table once all of its ``expected[k]`` rows are in: one pipeline can
    then score many shards and still write them one at a time. Its memory is the shards in
    flight: with rows arriving nearly in input order, the few that straddle the blocks in flight."""

    def __init__(self, expected: dict[int, int], n_shards: int) -> None:
        self.expected, self.n_shards = expected, n_shards
        self.parts: dict[int, list[pa.Table]] = {}
        self.counts = dict.fromkeys(expected, 0)

    def add(self, table: pa.Table) -> list[tuple[int, pa.Table]]:
        """The shards ``table`` completes, each as one table."""
        shards = shard_of(table.column("qid").to_numpy(zero_copy_only=False), self.n_shards)
        done = []
        for k in np.unique(shards).tolist():
            if k not in self.expected:
                raise StageError(f"teacher returned rows of shard {k}, which was not scored")
            part = table.filter(pa.array(shards == k))
            self.parts.setdefault(k, []).append(part)
            self.counts[k] += part.num_rows
            if self.counts[k] > self.expected[k]:
                raise StageError(
                    f"shard {k}: teacher returned {self.counts[k]} rows for {self.expected[k]}"
                )
            if self.counts[k] == self.expected[k]:
                done.append((k, pa.concat_tables(self.parts.pop(k))))
        return done

    def finish(self) -> None:
        """Every shard must have come back whole."""
        short = {k: n for k, n in self.counts.items() if n < self.expected[k]}
        if short:
            k = min(short)
            raise StageError(
                f"shard {k}: teacher returned {short[k]} rows for {self.expected[k]} "
                f"({len(short)} shards short)"
            )
