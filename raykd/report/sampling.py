"""Bounded, seeded samples of large Parquet artifacts for the report.

The driver never loads a whole ``scores/`` (possibly 10^8 rows) or ``train/<strategy>/``: it
scans them batch by batch with pyarrow and keeps a uniform sample without replacement of at most
``k`` rows (bottom-k of per-row uniform keys). Fragments are scanned in sorted path order, so the
same artifact and seed give the same sample.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from raykd.candidates.confidence import confidence
from raykd.data.schemas import KINDS, TRAIN
from raykd.errors import InputError
from raykd.run_dir import RunDir

SCAN_BATCH_ROWS = 262_144


class Reservoir:
    """A uniform sample of at most ``k`` rows of a stream of Arrow tables."""

    def __init__(self, k: int, rng: np.random.Generator):
        if k < 1:
            raise ValueError(f"sample size must be >= 1, got {k}")
        self.k = k
        self.rng = rng
        self.seen = 0
        self._keys = np.empty(0)
        self._parts: list[pa.Table] = []

    def add(self, table: pa.Table) -> None:
        n = table.num_rows
        self.seen += n
        if not n:
            return
        keys = self.rng.random(n)
        if len(self._keys) >= self.k:
            # Only rows whose key beats the current k-th smallest can enter the sample.
            keep = np.flatnonzero(keys < self._kth())
            table, keys = table.take(keep), keys[keep]
        self._parts.append(table)
        self._keys = np.concatenate([self._keys, keys])
        if len(self._keys) > 2 * self.k:
            self._trim()

    def _kth(self) -> float:
        return float(np.partition(self._keys, self.k - 1)[self.k - 1])

    def _trim(self) -> None:
        table = pa.concat_tables(self._parts)
        if len(self._keys) > self.k:
            idx = np.sort(np.argpartition(self._keys, self.k - 1)[: self.k])
            table, self._keys = table.take(idx), self._keys[idx]
        self._parts = [table]

    def table(self, schema: pa.Schema) -> pa.Table:
        if not self._parts:
            return schema.empty_table()
        self._trim()
        return self._parts[0]


def scan_fragments(
    run: RunDir, rel: str, columns: list[str], filt: pc.Expression | None = None
) -> Iterator[Iterator[pa.Table]]:
    """The record batches of ``rel`` (a Parquet folder), one iterator per file, files in sorted
    path order."""
    if not run.exists(rel):
        raise InputError(run.uri_of(rel), "missing: run the upstream stages first")
    ds = pads.dataset(run.path(rel), filesystem=run.fs, format="parquet")
    missing = [c for c in columns if c not in ds.schema.names]
    if missing:
        raise InputError(run.uri_of(rel), f"missing columns {missing}")
    for frag in sorted(ds.get_fragments(), key=lambda f: f.path):
        batches = frag.to_batches(columns=columns, filter=filt, batch_size=SCAN_BATCH_ROWS)
        yield (pa.Table.from_batches([b]) for b in batches if b.num_rows)


def scan(
    run: RunDir, rel: str, columns: list[str], filt: pc.Expression | None = None
) -> Iterator[pa.Table]:
    """Record batches of ``rel`` (a Parquet folder), files in sorted path order."""
    for batches in scan_fragments(run, rel, columns, filt):
        yield from batches


class BottomK:
    """The ``k`` distinct items of smallest key seen so far, in O(k) memory (a max-heap)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._heap: list[tuple[float, str]] = []  # (-key, item)
        self._members: set[str] = set()

    def add(self, key: float, item: str) -> None:
        if item in self._members or not self.k:
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-key, item))
        elif key < -self._heap[0][0]:
            _, out = heapq.heapreplace(self._heap, (-key, item))
            self._members.discard(out)
        else:
            return
        self._members.add(item)

    def items(self) -> list[str]:
        """By ascending key."""
        return [item for _, item in sorted(self._heap, reverse=True)]


def _qid_key(qid: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x1f{qid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass
class ScoreSample:
    """Raw teacher scores sampled per kind, and per-positive pools of a sample of queries."""

    scores: dict[str, np.ndarray]  # kind -> sampled raw scores
    totals: dict[str, int]  # kind -> rows of that kind in scores/
    cap: int  # rows sampled per kind at most
    pools: list[np.ndarray]  # [positive, original negatives...] per (sampled query, positive)
    pool_confidence: np.ndarray  # C(q) of each pool (positive against all its negatives)
    n_queries: int  # queries sampled for ``pools``
    total_queries: int


def sample_scores(
    run: RunDir, *, per_kind: int, n_queries: int, seed: int = 0, rel: str = "scores"
) -> ScoreSample:
    """Two scans of ``scores/``: a per-kind sample of rows (and a bottom-k sample of qids by a
    seeded hash), then every pos/neg row of the sampled qids, for the full-pool diagnostics.
    Memory: the samples, and the distinct qids of one file at a time."""
    rng = np.random.default_rng(seed)
    res = {k: Reservoir(per_kind, rng) for k in KINDS}
    chosen = BottomK(n_queries)
    n_qids = 0
    other: set[str] = set()
    for batches in scan_fragments(run, rel, ["qid", "kind", "score"]):
        # The score stage shards by qid: a query's rows share one file, so the distinct qids
        # are counted per file and the driver never holds a key per query.
        qids: set[str] = set()
        for batch in batches:
            kinds = batch.column("kind")
            for kind, r in res.items():
                r.add(batch.select(["score"]).filter(pc.equal(kinds, kind)))
            other.update(k for k in pc.unique(kinds).to_pylist() if k not in res)
            for qid in pc.unique(batch.column("qid")).to_pylist():
                if qid not in qids:
                    qids.add(qid)
                    chosen.add(_qid_key(qid, seed), qid)
        n_qids += len(qids)
    if other:
        raise InputError(run.uri_of(rel), f"unknown example kinds {sorted(other)}")
    schema = pa.schema([("score", pa.float32())])
    scores = {
        k: r.table(schema).column("score").to_numpy().astype(np.float64) for k, r in res.items()
    }
    pools, conf = _pools(run, rel, chosen.items())
    return ScoreSample(
        scores=scores,
        totals={k: r.seen for k, r in res.items()},
        cap=per_kind,
        pools=pools,
        pool_confidence=conf,
        n_queries=len(chosen.items()),
        total_queries=n_qids,
    )


def _pools(run: RunDir, rel: str, qids: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    if not qids:
        return [], np.empty(0)
    filt = pc.field("qid").isin(qids) & pc.field("kind").isin(["pos", "neg"])
    parts = list(scan(run, rel, ["qid", "eid", "kind", "score"], filt))
    table = pa.concat_tables(parts).sort_by([("qid", "ascending"), ("eid", "ascending")])
    qid = table.column("qid").to_numpy(zero_copy_only=False)
    kind = table.column("kind").to_numpy(zero_copy_only=False)
    score = table.column("score").to_numpy().astype(np.float64)
    bounds = np.flatnonzero(np.r_[True, qid[1:] != qid[:-1], True])
    pools, conf = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        negs = score[a:b][kind[a:b] == "neg"]
        for pos in score[a:b][kind[a:b] == "pos"]:
            pools.append(np.r_[pos, negs])
            conf.append(float(confidence(pos, negs)) if negs.size else 0.0)
    return pools, np.asarray(conf)


@dataclass
class TrainSample:
    """A sample of one strategy's ``train/<strategy>/`` rows."""

    strategy: str
    teacher: list[np.ndarray]  # positive first
    kinds: list[np.ndarray]
    confidence: np.ndarray
    total_rows: int
    cap: int


def sample_train(run: RunDir, rel: str, *, rows: int, seed: int = 0) -> TrainSample:
    """A uniform sample of at most ``rows`` rows of ``rel`` (a ``train/<strategy>`` folder)."""
    res = Reservoir(rows, np.random.default_rng(seed))
    columns = ["teacher", "kinds", "confidence"]
    for batch in scan(run, rel, columns):
        res.add(batch)
    table = res.table(pa.schema([TRAIN.field(c) for c in columns]))
    teacher = [np.asarray(t, dtype=np.float64) for t in table.column("teacher").to_pylist()]
    kinds = [np.asarray(k, dtype=object) for k in table.column("kinds").to_pylist()]
    for t, k in zip(teacher, kinds, strict=True):
        if len(t) != len(k) or not len(t):
            raise InputError(run.uri_of(rel), "a row's teacher and kinds lists differ in length")
    return TrainSample(
        strategy=rel.rstrip("/").rsplit("/", 1)[-1],
        teacher=teacher,
        kinds=kinds,
        confidence=table.column("confidence").to_numpy().astype(np.float64),
        total_rows=res.seen,
        cap=rows,
    )
