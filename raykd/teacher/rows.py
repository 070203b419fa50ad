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
