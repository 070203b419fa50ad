"""Combining per-source pools: source priority, de-duplication, and no positive as a negative."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raykd.data.acero import group_by
from raykd.data.schemas import POOL


def ranked_table(qids: list[str], pids: list[list[str]], scores, source: str) -> pa.Table:
    """A POOL table from per-query ranked lists (best first; ranks 1..len)."""
    flat_q, flat_p, flat_r, flat_s = [], [], [], []
    for qid, plist, srow in zip(qids, pids, scores, strict=True):
        flat_q.extend([qid] * len(plist))
        flat_p.extend(plist)
        flat_r.extend(range(1, len(plist) + 1))
        flat_s.extend(np.asarray(srow, dtype=np.float32)[: len(plist)].tolist())
    return pa.table(
        [
            flat_q,
            flat_p,
            pa.array(flat_r, pa.int32()),
            pa.array(flat_s, pa.float32()),
            [source] * len(flat_q),
        ],
        schema=POOL,
    )


def merge_pools(
    pools: list[pa.Table], positives: dict[str, set[str]]
) -> tuple[pa.Table, dict[str, int]]:
    """One pool from ``pools`` (given in priority order).

    A (qid, pid) found by several sources keeps the first source's row (rank and score); qrels
    positives are dropped. Rows are ordered by qid, then source priority, then rank. Returns the
    pool and counts of what was dropped.
    """
    tables = [
        t.append_column("_prio", pa.array(np.full(len(t), i, dtype=np.int32)))
        for i, t in enumerate(pools)
    ]
    allp = (
        pa.concat_tables(tables)
        if tables
        else POOL.empty_table().append_column("_prio", pa.array([], pa.int32()))
    )
    allp = allp.sort_by([("qid", "ascending"), ("_prio", "ascending"), ("rank", "ascending")])
    # Vectorised over (qid, pid) keys: the driver merges a chunk of ~10^6 rows without a
    # Python object per row.
    keys = _keys(allp.column("qid"), allp.column("pid"))
    pos = [(q, p) for q, ps in positives.items() for p in ps]
    pos_keys = _keys(
        pa.array([q for q, _ in pos], pa.string()), pa.array([p for _, p in pos], pa.string())
    )
    is_pos = pc.is_in(keys, value_set=pos_keys).to_numpy(zero_copy_only=False)
    first = np.zeros(len(allp), dtype=bool)
    ids = pc.index_in(keys, value_set=pc.unique(keys)).to_numpy()
    first[np.unique(ids, return_index=True)[1]] = True  # each key's first row
    keep = first & ~is_pos
    n_pos, n_dup = int(is_pos.sum()), int((~first & ~is_pos).sum())
    merged = allp.filter(pa.array(keep)).drop_columns(["_prio"])
    return merged.cast(POOL), {"dropped_positives": n_pos, "dropped_duplicates": n_dup}


def _keys(qids, pids):
    """One string per (qid, pid); the unit separator keeps "q"+"ab" apart from "qa"+"b"."""
    return pc.binary_join_element_wise(qids, pids, "\x1f")


def pool_sizes(pool: pa.Table, qids: list[str]) -> dict[str, int]:
    """Pool rows per query (0 for a query with none)."""
    counts = group_by(pool, "qid").aggregate([("pid", "count")])
    out = dict.fromkeys(qids, 0)
    out.update(
        zip(counts.column("qid").to_pylist(), counts.column("pid_count").to_pylist(), strict=True)
    )
    return out
