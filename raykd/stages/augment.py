"""The ``augment`` stage: everything the teacher scores per training query -> ``examples/``.

Per training query (schema EXAMPLES; texts follow ``raykd.mining.dark_examples``):
``pos`` per positive, ``neg`` per pool negative, ``rein`` per positive x ``n_rein`` pool
negatives, ``mask`` per positive x ``mask_ratios``. The twinned negatives are, with
``rein_pick: top``, the first ``n_rein`` in (retrieved before random, then pool rank, then source)
order: ADAM reinforces hard negatives, and a random draw's "rank" ranks nothing. With
``rein_pick: random`` they are ``n_rein`` drawn uniformly among the retrieved negatives (seeded
per query; random-source ones only when too few were retrieved), ADAM's "we randomly select m
hard negatives" (§4.3).

The driver plans the rows (ids only) a chunk of queries at a time into staged Parquet, so it
never holds the whole plan (108M rows at MS MARCO). Ray Data reads the corpus in one streaming
pass keeping only the needed pids, then actors attach the texts to the staged plan and tokenise
for masking. The ordered output (qid, pos<neg<rein<mask, eid) is written with a fixed layout
(rows per row group and per file), so two runs give byte-identical files.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from raykd.config import JobConfig
from raykd.console import progress
from raykd.data.acero import group_by
from raykd.data.parquet import FixedLayoutWriter
from raykd.data.passages import passage_texts
from raykd.data.schemas import EXAMPLES, KINDS
from raykd.errors import InputError, StageError
from raykd.mining import dark_examples as dx
from raykd.on_ray.errors import unwrap_ray_error
from raykd.stages.mine import QUERY_CHUNK, positive_judgements, positives_of, train_qids
from raykd.stages.pipeline import StageContext, StageResult

log = logging.getLogger(__name__)

ROWS_PER_GROUP = 1 << 16
# Queries planned at once (~220k rows at ADAM's counts as Python objects): a quarter of mine's
# QUERY_CHUNK, whose pool row group is read once and planned in parts.
PLAN_CHUNK = 1024
ROWS_PER_FILE = 1 << 20
FOLD_PIDS = 1 << 20
_SPEC = pa.schema([f for f in EXAMPLES if f.name != "text"])


def plan_examples(
    qids: list[str],
    positives: dict[str, dict[str, int]],
    pool: pa.Table,
    sources: list[str],
    n_rein: int,
    mask_ratios: list[float],
    rein_pick: str = "top",
    seed: int = 0,
) -> tuple[pa.Table, list[str]]:
    """The example rows without texts, in output order, and the queries with an empty pool."""
    prio = {s: i for i, s in enumerate(sources)}
    negs: dict[str, list[tuple[bool, int, int, str]]] = {}
    cols = (pool.column(c).to_pylist() for c in ("qid", "pid", "rank", "source"))
    for q, p, r, s in zip(*cols, strict=True):
        negs.setdefault(q, []).append((s == "random", r, prio.get(s, len(prio)), p))
    # Columns, not row tuples: a chunk plans ~885k rows at ADAM's counts, and a tuple per row
    # (then transposed) doubled the driver's peak.
    columns: list[list] = [[] for _ in _SPEC]
    qid_col, eid_col, kind_col, pid_col, pid2_col, ratio_col = columns
    empty = []
    for qid in sorted(qids):
        pos = sorted(positives[qid])
        order = sorted(negs.get(qid, []))
        ranked = [p for *_, p in order]
        if not ranked:
            empty.append(qid)
        twinned = ranked[:n_rein]
        if rein_pick == "random":
            retrieved = [p for is_random, *_, p in order if not is_random]
            drawn = dx.rein_rng(seed, qid).permutation(len(retrieved))[:n_rein]
            twinned = [retrieved[i] for i in sorted(drawn)]
            twinned += [p for is_random, *_, p in order if is_random][: n_rein - len(twinned)]
        per_kind = {
            "pos": [(dx.eid_pos(qid, p), p, None, None) for p in pos],
            "neg": [(dx.eid_neg(qid, p), p, None, None) for p in ranked],
            "rein": [(dx.eid_rein(qid, p, n), p, n, None) for p in pos for n in twinned],
            "mask": [(dx.eid_mask(qid, p, r), p, None, r) for p in pos for r in mask_ratios],
        }
        for kind in KINDS:
            for eid, pid, pid2, ratio in sorted(per_kind[kind]):
                qid_col.append(qid)
                eid_col.append(eid)
                kind_col.append(kind)
                pid_col.append(pid)
                pid2_col.append(pid2)
                ratio_col.append(ratio)
    return pa.table(columns, schema=_SPEC), empty


def _select_passages(batch: pa.Table, wanted: pa.Array) -> pa.Table:
    keep = batch.filter(pc.is_in(batch.column("pid"), value_set=wanted))
    return pa.table({"pid": keep.column("pid"), "ptext": passage_texts(keep)})


def _pid_bytes(pids: list[str]) -> np.ndarray:
    """Pids as fixed-width UTF-8 bytes: numpy's str dtype spends 4 bytes a character."""
    return np.array([p.encode() for p in pids], dtype=bytes)


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class _AttachTexts:
    """Ray Data callable class: example rows in, rows with their scored text out.

    The needed passages' texts stay in the object store, read zero-copy, so every actor shares
    one copy; an actor keeps only a sorted array of their pids and where each text is (the
    pids as fixed-width UTF-8 bytes, not a Python dict of every text: at MS MARCO scale most
    of 8.8M passages, 7 bytes a pid)."""

    def __init__(self, text_refs: list, tokenizer: str | None, seed: int) -> None:
        tables = [t for t in ray.get(text_refs) if t.num_rows]
        # One array per block (a block's column in one chunk is not copied).
        self.chunks = [_one_chunk(t.column("ptext")) for t in tables]
        pids = np.concatenate(
            [_pid_bytes(t.column("pid").to_pylist()) for t in tables] or [_pid_bytes([])]
        )
        # The block and the row in it of each pid's text.
        block = np.concatenate(
            [np.full(t.num_rows, i, np.int32) for i, t in enumerate(tables)]
            or [np.array([], np.int32)]
        )
        row = np.concatenate(
            [np.arange(t.num_rows, dtype=np.int32) for t in tables] or [np.array([], np.int32)]
        )
        order = np.argsort(pids)
        self.pids, self.block, self.row = pids[order], block[order], row[order]
        self.tokenizer = dx.load_tokenizer(tokenizer)
        self.sep = dx.sep_token(self.tokenizer)
        self.seed = seed

    def _lookup(self, pids: list[str]) -> dict[str, str]:
        wanted = _pid_bytes(pids)
        pos = np.minimum(np.searchsorted(self.pids, wanted), len(self.pids) - 1)
        found = self.pids[pos] == wanted
        if not found.all():
            raise StageError(f"augment: no text for pid {pids[int(np.argmin(found))]!r}")
        places = zip(pids, self.block[pos].tolist(), self.row[pos].tolist(), strict=True)
        return {p: self.chunks[b][r].as_py() for p, b, r in places}

    def _one(
        self, text: dict[str, str], qid: str, kind: str, pid: str, pid2: str | None, ratio
    ) -> str:
        if kind in ("pos", "neg"):
            return text[pid]
        if kind == "rein":
            return dx.rein_text(text[pid], text[pid2], self.sep)
        rng = dx.mask_rng(self.seed, qid, pid, ratio)
        return dx.mask_text(text[pid], ratio, rng, self.tokenizer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = [batch.column(c).to_pylist() for c in ("qid", "kind", "pid", "pid2", "mask_ratio")]
        text = self._lookup(sorted(set(cols[2]) | (set(cols[3]) - {None})))
        texts = [self._one(text, *row) for row in zip(*cols, strict=True)]
        return batch.append_column("text", pa.array(texts, pa.string()))


def _tokenizer_ref(cfg: JobConfig) -> str | None:
    t = cfg.teacher
    return dx.tokenizer_ref(cfg.augment.tokenizer, t.kind, t.model, t.members)


def _write_plan(ctx: StageContext, qids: list[str], judged: pa.Table) -> dict:
    """Plan the examples of ``qids`` (in qid order, as ``train_qids`` gives them) ``PLAN_CHUNK``
    queries at a time into ``_plan/`` in the staging folder; the driver holds the positive
    judgements (Arrow), one ``QUERY_CHUNK``'s pool, one part's plan and the distinct pids needed
    so far. Each chunk reads only its qid
    range of the pool, whose row groups ``mine`` wrote per chunk, so the Parquet statistics skip
    the rest. Returns the plan's totals and the distinct pids it needs."""
    cfg, a = ctx.cfg, ctx.cfg.augment
    pool = pads.dataset(ctx.run.path("pool"), filesystem=ctx.run.fs, format="parquet")
    kinds: dict[str, int] = dict.fromkeys(KINDS, 0)
    rows, empty, first_empty = 0, 0, None
    wanted, fresh, n_fresh = pa.array([], pa.string()), [], 0
    ctx.run.fs.create_dir(ctx.staging.path("_plan"), recursive=True)
    parts = 0
    for i in range(0, len(qids), QUERY_CHUNK):
        chunk = qids[i : i + QUERY_CHUNK]
        in_range = (pc.field("qid") >= chunk[0]) & (pc.field("qid") <= chunk[-1])
        chunk_negs = pool.to_table(["qid", "pid", "rank", "source"], filter=in_range)
        for j in range(0, len(chunk), PLAN_CHUNK):
            part = chunk[j : j + PLAN_CHUNK]
            negs = chunk_negs.filter(pc.is_in(chunk_negs.column("qid"), value_set=pa.array(part)))
            plan, missing = plan_examples(
                part,
                positives_of(judged, part),
                negs,
                cfg.mining.sources,
                a.n_rein,
                a.mask_ratios,
                a.rein_pick,
                a.seed,
            )
            path = ctx.staging.path(f"_plan/part-{parts:06d}.parquet")
            pq.write_table(plan, path, filesystem=ctx.run.fs)
            parts += 1
            rows += plan.num_rows
            empty += len(missing)
            first_empty = first_empty or min(missing, default=None)
            counts = group_by(plan, "kind").aggregate([("eid", "count")]).to_pydict()
            for kind, c in zip(counts["kind"], counts["eid_count"], strict=True):
                kinds[kind] += c
            # Folded into the distinct set once the parts' pids outnumber it: the driver holds
            # at most about twice the distinct pids, never one entry per pool row (~100M at
            # MS MARCO), and each pid is hashed a bounded number of times.
            fresh.append(pc.unique(plan.column("pid")))
            n_fresh += len(fresh[-1])
            if n_fresh >= max(len(wanted), FOLD_PIDS):
                wanted, fresh, n_fresh = pc.unique(pa.chunked_array([wanted, *fresh])), [], 0
    if empty:
        log.warning(
            "augment: %d training queries have no pool negative (e.g. %s)", empty, first_empty
        )
    wanted = pc.unique(pa.chunked_array([wanted, *fresh]))
    return {"rows": rows, "empty": empty, "kinds": kinds, "wanted": wanted}


def run_augment(ctx: StageContext) -> StageResult:
    cfg, a = ctx.cfg, ctx.cfg.augment
    split = cfg.data.splits.train
    qids = train_qids(ctx.run, split)
    judged = positive_judgements(ctx.run, split)
    all_qids = pa.array(qids, pa.string())
    unjudged = pc.invert(pc.is_in(all_qids, value_set=judged.column("qid")))
    if pc.any(unjudged).as_py():
        qid = all_qids.filter(unjudged)[0].as_py()
        raise InputError(ctx.run.path(f"qrels/{split}"), f"training query {qid!r} has no positive")
    plan = _write_plan(ctx, qids, judged)
    wanted = plan["wanted"]
    tok = _tokenizer_ref(cfg)
    start = time.perf_counter()
    with unwrap_ray_error():
        texts = (
            ray.data.read_parquet(ctx.run.uri_of("corpus"))
            .select_columns(["pid", "title", "text"])
            .map_batches(_select_passages, fn_kwargs={"wanted": wanted}, batch_format="pyarrow")
            .materialize()
        )
        found = texts.count()
        if found != len(wanted):
            raise StageError(f"augment: {len(wanted) - found} needed pids are not in the corpus")
        refs = texts.to_arrow_refs()
        log.info("augment: gathered %d passage texts in %.1f s", found, time.perf_counter() - start)
        examples = ray.data.read_parquet(ctx.staging.uri("_plan")).map_batches(
            _AttachTexts,
            fn_constructor_kwargs={"text_refs": refs, "tokenizer": tok, "seed": a.seed},
            batch_size=a.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=a.min_actors, max_size=a.max_actors),
        )
        # The dataset's own context: it copied the current one when it was made, so setting
        # the current one now would not reach it (Ray Data may reorder blocks otherwise).
        examples.context.execution_options.preserve_order = True
        writer = FixedLayoutWriter(
            ctx.run.fs, ctx.staging.path("examples"), EXAMPLES, ROWS_PER_GROUP, ROWS_PER_FILE
        )
        last_qid = ""
        with progress("augment", plan["rows"], "examples") as bar:
            for batch in examples.iter_batches(batch_size=a.batch_size, batch_format="pyarrow"):
                got = batch.column("qid")
                if not len(got):
                    continue
                if got[0].as_py() < last_qid:
                    raise StageError("augment: examples arrived out of qid order")
                last_qid = got[-1].as_py()
                writer.write(batch)
                bar.update(batch.num_rows)
        n = writer.close()
    if n != plan["rows"]:
        raise StageError(f"augment: wrote {n} examples, planned {plan['rows']}")
    wall = time.perf_counter() - start
    log.info("augment: %d examples in %.1f s (%.0f/s)", n, wall, n / max(wall, 1e-9))
    info = {
        "tokenizer": tok,
        "queries": len(qids),
        "empty_pools": plan["empty"],
        **{f"n_{k}": c for k, c in plan["kinds"].items() if c},
    }
    return StageResult(rows={"examples": n}, info=info, count=(n, "examples"))
