"""Per-query assembly of TRAIN rows from one query's examples, teacher scores and retriever ranks.

Pure (pyarrow + NumPy, no Ray): the build stage runs ``assemble_group`` on every qid group of
the union of queries, examples, scores and pool rows (schema ``GROUP``); tests call
``assemble_query`` directly.

Rows: one per (training query, positive example). The negatives are shared by every positive of a
query; the reinforced negatives and masked positives of a row are those built from its positive.
The pool of a row is [its positive] + the query's "neg" rows + its "rein" and "mask" rows, the
non-positive rows in ascending eid order (so the seeded strategies see the same pool whatever
order the shuffle delivered the rows in). Per-query seeds come from ``query_seed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raykd.candidates.confidence import pool_confidence
from raykd.candidates.diagnostics import describe, pad_ragged
from raykd.candidates.pool import InsufficientCandidates, QueryPool
from raykd.candidates.select import select_candidates
from raykd.config import CandidatesSection
from raykd.data.schemas import TRAIN
from raykd.errors import InputError

# Which input a GROUP row came from.
SRC_QUERY, SRC_EXAMPLE, SRC_SCORE, SRC_POOL = 0, 1, 2, 3

# The union the stage groups by qid: each source fills its own columns, the rest are null.
GROUP = pa.schema(
    [
        ("qid", pa.string()),
        ("src", pa.int8()),
        ("eid", pa.string()),  # example, score
        ("kind", pa.string()),  # example, score
        ("pid", pa.string()),  # example, pool
        ("pid2", pa.string()),  # example
        ("mask_ratio", pa.float32()),  # example
        ("text", pa.string()),  # query, example
        ("score", pa.float32()),  # score
        ("rank", pa.int32()),  # pool
        ("source", pa.string()),  # pool
    ]
)

# TRAIN plus what the stage needs to sort, count and describe; the writer keeps TRAIN only.
DIAGNOSTICS = ("set_variance", "set_entropy", "set_entropy_norm")
POOL_DIAGNOSTICS = ("pool_variance", "pool_entropy", "pool_entropy_norm")
ASSEMBLED = pa.schema(
    list(TRAIN)
    + [
        pa.field("pos_pid", pa.string()),
        pa.field("skipped", pa.bool_()),  # a qid group that is not a training query
        pa.field("short", pa.bool_()),  # on_short="fill" gave fewer than asked
    ]
    + [pa.field(n, pa.float64()) for n in DIAGNOSTICS + POOL_DIAGNOSTICS]
)

# Pool rows of this source carry a draw order, not a retriever rank.
UNRANKED_SOURCES = ("random",)


def query_seed(seed: int, qid: str) -> int:
    """A 64-bit seed from (seed, qid): stable across processes (unlike the salted ``hash``)."""
    digest = hashlib.blake2b(f"{seed}\x1f{qid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class TrainRow:
    """One TRAIN row before it becomes Arrow: the query, its positive, the candidates and their
    teacher scores (positive first), kinds, confidence C(q) and the pool scores.
    """

    qid: str
    query: str
    pos_pid: str
    pos: str
    cands: list[str]
    teacher: list[float]  # positive first
    kinds: list[str]  # aligned with teacher, first "pos"
    confidence: float
    short: bool
    pool_scores: np.ndarray  # positive + every original negative, for the diagnostics


def assemble_query(
    qid: str,
    query: str,
    examples: pa.Table,
    scores: pa.Table,
    ranks: Mapping[str, int],
    candidates: CandidatesSection,
    teacher_temperature: float,
    *,
    examples_path: str = "examples",
    scores_path: str = "scores",
) -> list[TrainRow]:
    """The TRAIN rows of one training query, ordered by positive pid.

    examples: this query's EXAMPLES rows (any order); scores: its SCORES rows (qid, eid, kind,
    score; extra columns ignored); ranks: pid -> retriever rank; candidates: the job's section,
    whole; teacher_temperature: that of the confidence C(q) (ADAM Eq. 7; ``train``'s).

    Raises InputError (naming the file and the qid) for a query without a positive, an example
    without a score or a score without an example, a kind mismatch, a non-finite score, a
    reinforced negative whose negative is missing, and, with on_short="fail", a pool too small
    for the selection.
    """
    ex = {c: examples.column(c).to_pylist() for c in ("eid", "kind", "pid", "pid2", "mask_ratio")}
    ex_text = examples.column("text").to_pylist()
    dup = _first_duplicate(ex["eid"])
    if dup is not None:
        raise InputError(examples_path, f"query {qid!r}: duplicate example {dup!r}")
    score_eids = scores.column("eid").to_pylist()
    score_vals = scores.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    score_kinds = scores.column("kind").to_pylist()
    dup = _first_duplicate(score_eids)
    if dup is not None:
        raise InputError(scores_path, f"query {qid!r}: duplicate score for {dup!r}")
    bad = np.flatnonzero(~np.isfinite(score_vals))
    if bad.size:
        i = int(bad[0])
        raise InputError(
            scores_path,
            f"non-finite teacher score {score_vals[i]} for {score_eids[i]!r} of query {qid!r}",
        )
    score_of = dict(
        zip(score_eids, zip(score_vals.tolist(), score_kinds, strict=True), strict=True)
    )
    for eid, kind in zip(ex["eid"], ex["kind"], strict=True):
        if eid not in score_of:
            raise InputError(scores_path, f"query {qid!r}: no teacher score for {eid!r}")
        if score_of[eid][1] != kind:
            raise InputError(
                scores_path,
                f"query {qid!r}: {eid!r} is a {kind!r} example but scored as {score_of[eid][1]!r}",
            )
    if len(score_of) != len(ex["eid"]):
        known = set(ex["eid"])
        extra = min(e for e in score_eids if e not in known)
        raise InputError(scores_path, f"query {qid!r}: score for unknown example {extra!r}")

    order = sorted(range(len(ex["eid"])), key=ex["eid"].__getitem__)
    positives = sorted((ex["pid"][i], i) for i in order if ex["kind"][i] == "pos")
    if not positives:
        raise InputError(examples_path, f"training query {qid!r} has no positive example")
    negs = [i for i in order if ex["kind"][i] == "neg"]
    neg_eid = {ex["pid"][i]: ex["eid"][i] for i in negs}
    seed = query_seed(candidates.seed, qid)
    rows = []
    for pos_pid, p in positives:
        dark = [i for i in order if ex["kind"][i] in ("rein", "mask") and ex["pid"][i] == pos_pid]
        rows_idx = [p] + sorted(negs + dark, key=ex["eid"].__getitem__)
        parents = []
        for i in rows_idx:
            parent = ""
            if ex["kind"][i] == "rein":
                parent = neg_eid.get(ex["pid2"][i], "")
                if not parent:
                    raise InputError(
                        examples_path,
                        f"query {qid!r}: {ex['eid'][i]!r} is built from negative "
                        f"{ex['pid2'][i]!r}, which has no 'neg' example",
                    )
            parents.append(parent)
        pool = QueryPool(
            ids=[ex["eid"][i] for i in rows_idx],
            scores=[score_of[ex["eid"][i]][0] for i in rows_idx],
            kinds=[ex["kind"][i] for i in rows_idx],
            ranks=[
                ranks.get(ex["pid"][i], -1) if ex["kind"][i] in ("pos", "neg") else -1
                for i in rows_idx
            ],
            parents=parents,
            mask_ratios=[
                np.nan if ex["mask_ratio"][i] is None else ex["mask_ratio"][i] for i in rows_idx
            ],
            qid=qid,
        )
        try:
            picked = select_candidates(pool, candidates, seed)
        except InsufficientCandidates as err:
            raise InputError(
                examples_path,
                f"query {qid!r} (positive {pos_pid!r}): {err}; lower candidates.m / n_masked "
                "or set candidates.on_short=fill",
            ) from None
        kinds = pool.kinds[picked]
        short = int((kinds == "neg").sum()) < candidates.m or (
            candidates.strategy == "dark"
            and candidates.n_masked is not None
            and int((kinds == "mask").sum()) < candidates.n_masked
        )
        rows.append(
            TrainRow(
                qid=qid,
                query=query,
                pos_pid=pos_pid,
                pos=ex_text[p],
                cands=[ex_text[rows_idx[j]] for j in picked],
                teacher=[float(pool.scores[0])] + pool.scores[picked].tolist(),
                kinds=["pos"] + kinds.tolist(),
                confidence=pool_confidence(
                    pool, picked, pos_index=0, temperature=teacher_temperature
                ),
                short=short,
                pool_scores=pool.scores[pool.positives() | pool.negatives()],
            )
        )
    return rows


def rows_table(rows: list[TrainRow], teacher_temperature: float = 1.0) -> pa.Table:
    """TrainRows as an ASSEMBLED table; the teacher-score diagnostics per row, entropies of the
    softmax at ``teacher_temperature`` (the one the student is distilled towards)."""
    if not rows:
        return ASSEMBLED.empty_table()
    cols: dict[str, object] = {
        "qid": [r.qid for r in rows],
        "query": [r.query for r in rows],
        "pos": [r.pos for r in rows],
        "cands": [r.cands for r in rows],
        "teacher": [r.teacher for r in rows],
        "kinds": [r.kinds for r in rows],
        "confidence": [r.confidence for r in rows],
        "pos_pid": [r.pos_pid for r in rows],
        "skipped": [False] * len(rows),
        "short": [r.short for r in rows],
    }
    for names, seqs in (
        (DIAGNOSTICS, [r.teacher for r in rows]),
        (POOL_DIAGNOSTICS, [r.pool_scores for r in rows]),
    ):
        d = describe(*pad_ragged(seqs), temperature=teacher_temperature)
        for name, key in zip(names, ("variance", "entropy", "entropy_norm"), strict=True):
            cols[name] = d[key]
    return pa.table(cols, schema=ASSEMBLED)


def assemble_group(
    group: pa.Table,
    candidates: CandidatesSection,
    teacher_temperature: float,
    examples_path: str,
    scores_path: str,
) -> pa.Table:
    """``map_groups`` function: one qid's GROUP rows -> its ASSEMBLED rows.

    A group without a query row (examples or pool of a qid outside the training split) yields one
    row flagged ``skipped``, so the stage can count it.
    """
    src = group.column("src").to_numpy()
    qid = group.column("qid")[0].as_py()
    q = np.flatnonzero(src == SRC_QUERY)
    if not q.size:
        row = {n: [None] for n in ASSEMBLED.names}
        row.update(qid=[qid], pos_pid=[""], skipped=[True], short=[False])
        return pa.table(row, schema=ASSEMBLED)
    pool = group.filter(pa.array(src == SRC_POOL))
    ranks: dict[str, int] = {}
    for pid, rank, source in zip(
        pool.column("pid").to_pylist(),
        pool.column("rank").to_pylist(),
        pool.column("source").to_pylist(),
        strict=True,
    ):
        if source not in UNRANKED_SOURCES and rank is not None and rank >= 0:
            ranks[pid] = min(rank, ranks.get(pid, rank))
    rows = assemble_query(
        qid,
        group.column("text")[int(q[0])].as_py(),
        group.filter(pa.array(src == SRC_EXAMPLE)),
        group.filter(pa.array(src == SRC_SCORE)),
        ranks,
        candidates,
        teacher_temperature,
        examples_path=examples_path,
        scores_path=scores_path,
    )
    return rows_table(rows, teacher_temperature)


def to_group(batch: pa.Table, src: int) -> pa.Table:
    """Rows of one input (queries, examples, scores or pool) in the GROUP schema."""
    n = batch.num_rows
    cols = {c: batch.column(c) for c in batch.column_names if c in GROUP.names}
    cols["src"] = pa.array(np.full(n, src, dtype=np.int8))
    return pa.table(
        [cols[f.name].cast(f.type) if f.name in cols else pa.nulls(n, f.type) for f in GROUP],
        schema=GROUP,
    )


def _first_duplicate(ids: list[str]) -> str | None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return None
