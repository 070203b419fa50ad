"""One query's candidate pool: the rows the build stage chooses candidate sets from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from raykd.data.schemas import KINDS

OnShort = Literal["fail", "fill"]  # candidates.on_short


class InsufficientCandidates(ValueError):
    """The pool holds fewer entries of a kind than a selection asked for."""


@dataclass(frozen=True, eq=False)
class QueryPool:
    """Candidate pool of one query; every array is aligned by row.

    ids: str ids of the rows (pids or eids), unique within the pool.
    scores: raw teacher logits, finite; stored as float64.
    kinds: "pos", "neg", "rein" (reinforced negative ``p+ [SEP] p-``) or "mask" (noisy positive).
    ranks: first-stage retriever rank per row, -1 where unknown (e.g. random negatives).
    parents: for "rein" rows, the id (in ``ids``) of the "neg" row p- it was built from; "" on
        other rows. Required when the pool has "rein" rows, so dark sets can pair them.
    mask_ratios: for "mask" rows, the fraction of positive tokens replaced by [MASK]; NaN elsewhere.
    qid: the query's id, used only in error messages.

    Arrays are copied and made read-only, so a pool can be shared safely.
    """

    ids: np.ndarray
    scores: np.ndarray
    kinds: np.ndarray
    ranks: np.ndarray | None = None
    parents: np.ndarray | None = None
    mask_ratios: np.ndarray | None = None
    qid: str = ""

    def __post_init__(self) -> None:
        ids = np.array(self.ids, dtype=str).reshape(-1)
        n = len(ids)
        scores = np.array(self.scores, dtype=np.float64).reshape(-1)
        kinds = np.array(self.kinds, dtype=str).reshape(-1)
        ranks = (
            np.full(n, -1, dtype=np.int64)
            if self.ranks is None
            else np.array(self.ranks, dtype=np.int64).reshape(-1)
        )
        parents = (
            np.full(n, "", dtype=str)
            if self.parents is None
            else np.array(self.parents, dtype=str).reshape(-1)
        )
        ratios = (
            np.full(n, np.nan)
            if self.mask_ratios is None
            else np.array(self.mask_ratios, dtype=np.float64).reshape(-1)
        )
        where = f" (query {self.qid!r})" if self.qid else ""
        for name, arr in (
            ("scores", scores),
            ("kinds", kinds),
            ("ranks", ranks),
            ("parents", parents),
            ("mask_ratios", ratios),
        ):
            if len(arr) != n:
                raise ValueError(f"QueryPool{where}: {name} has {len(arr)} rows, ids has {n}")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"QueryPool{where}: non-finite teacher score {scores[i]} for {str(ids[i])!r}"
            )
        bad = np.flatnonzero(~np.isin(kinds, KINDS))
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"QueryPool{where}: unknown kind {str(kinds[i])!r} for {str(ids[i])!r}"
            )
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"QueryPool{where}: duplicate id {str(uniq[counts > 1][0])!r}")
        bad = np.flatnonzero((kinds == "rein") & (parents == ""))
        if bad.size:
            raise ValueError(
                f"QueryPool{where}: rein row {str(ids[bad[0]])!r} has no parent negative"
            )
        for name, arr in (
            ("ids", ids),
            ("scores", scores),
            ("kinds", kinds),
            ("ranks", ranks),
            ("parents", parents),
            ("mask_ratios", ratios),
        ):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.ids)

    def kind_mask(self, kind: str) -> np.ndarray:
        """Boolean mask of the rows of ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return self.kinds == kind

    def negatives(self) -> np.ndarray:
        """Boolean mask of the "neg" rows."""
        return self.kind_mask("neg")

    def positives(self) -> np.ndarray:
        """Boolean mask of the "pos" rows."""
        return self.kind_mask("pos")

    def subset(self, keep: np.ndarray) -> QueryPool:
        """The pool restricted to ``keep`` (a boolean mask or row indices), in that order."""
        return QueryPool(
            ids=self.ids[keep],
            scores=self.scores[keep],
            kinds=self.kinds[keep],
            ranks=self.ranks[keep],
            parents=self.parents[keep],
            mask_ratios=self.mask_ratios[keep],
            qid=self.qid,
        )


def check_count(
    available: int, m: int, on_short: OnShort, what: str = "negatives", qid: str = ""
) -> int:
    """How many entries to select: ``m``, or ``available`` when short and ``on_short="fill"``.

    Raises InsufficientCandidates when short and ``on_short="fail"``.
    """
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    if on_short not in ("fail", "fill"):
        raise ValueError(f"on_short must be 'fail' or 'fill', got {on_short!r}")
    if available >= m:
        return m
    if on_short == "fail":
        where = f" of query {qid!r}" if qid else ""
        raise InsufficientCandidates(f"asked for {m} {what}, the pool{where} has {available}")
    return available
