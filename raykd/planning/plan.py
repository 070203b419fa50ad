"""``raykd plan``: what a job costs before it runs, from counts, model shapes and hardware.

Time per stage = fixed start-ups (actor pools, the trainer) + FLOPs / achieved FLOP/s, with
FLOPs from ``raykd.planning.flops`` and achieved rates from the hardware table
(``raykd.planning.hardware``), or from a measured file (``--measured``, written by the bench
scripts) where it has them. BM25, which has no FLOPs, runs at rates per token measured here.
Sizes are uncompressed (Parquet's compression makes the stored files smaller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from raykd.config import JobConfig
from raykd.planning.flops import ModelShape, TextLengths, model_shape
from raykd.planning.hardware import (
    GIB,
    POOL_START_S,
    TOKENIZE_TOKENS_PER_S,
    TRAIN_START_S,
    TRAIN_STEP_S,
    Hardware,
)

# One CPU core, BERT-token counts of SciFact abstracts (bench/plan_rates in the README "Plan"):
# bm25s tokenises and indexes, raykd's BM25 teacher scores (query, passage) pairs.
BM25_INDEX_TOKENS_PER_S = 1.0e6
BM25_SCORE_TOKENS_PER_S = 2.0e6
# A BM25 pool imports neither torch nor a model: the demo's BM25 score stage took 4.1 s (an idle
# fast day) to 11.3 s (a slow day) for 22,874 pairs, about 3.4 s of them scoring.
BM25_POOL_START_S = 5.0
RETRIEVERS = ("bm25", "dense", "file")
BYTES_PER_ID = 12  # a qid/pid/eid string in Arrow: its characters plus a 4-byte offset


@dataclass(frozen=True)
class Counts:
    """The collection's sizes: from prepare's and augment's manifests, or given."""

    passages: int
    train_queries: int
    eval_queries: int
    train_rows: int  # (training query, positive) pairs: the TRAIN rows the build writes
    pairs: int  # the examples the teacher scores
    source: str
    pairs_source: str


@dataclass
class Plan:
    """The plan's table rows (stage, item, value, basis) and its per-stage seconds."""

    hardware: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, item: str, value: str, basis: str = "") -> None:
        self.rows.append((stage, item, value, basis))

    def as_dict(self) -> dict[str, Any]:
        return {"hardware": self.hardware, "seconds": self.seconds, "rows": self.rows}


def estimate_pairs(cfg: JobConfig, train_queries: int, train_rows: int) -> int:
    """What augment writes, before mine drops duplicates and positives from the pool: per query
    the retrievers' depth and the random draws, per positive itself, its twins and masks."""
    m, a = cfg.mining, cfg.augment
    pool = m.depth * sum(s in RETRIEVERS for s in m.sources) + m.n_random * ("random" in m.sources)
    return train_queries * pool + train_rows * (1 + a.n_rein + len(a.mask_ratios))


def passages_per_row(cfg: JobConfig) -> int:
    """Passages the student encodes per TRAIN row: the positive and the candidate set."""
    c = cfg.candidates
    if c.strategy == "dark":  # m originals, their m twins, the masked positives (ADAM §3.3)
        return 1 + 2 * c.m + (c.n_masked or len(cfg.augment.mask_ratios))
    return 1 + c.m


def _time(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    if s >= 120:
        return f"{s / 60:,.1f} min"
    return f"{s:,.0f} s" if s >= 10 else f"{s:.2g} s"


def _size(b: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b / 1024:,.0f} KiB"


def _flop(f: float) -> str:
    return f"{f:.2e} FLOP"


class Planner:
    """Estimates for one job on one hardware; ``measured`` maps ``raykd.planning.inputs.RATES``
    to figures per device."""

    def __init__(
        self,
        cfg: JobConfig,
        hw: Hardware,
        counts: Counts,
        lengths: TextLengths,
        measured: dict[str, float] | None = None,
        target_hours: float = 1.0,
    ) -> None:
        self.cfg, self.hw, self.n, self.len = cfg, hw, counts, lengths
        self.measured = measured or {}
        self.target_hours = target_hours
        self.plan = Plan(hw.label)

    def rate(self, work: str, devices: int | None = None) -> tuple[float, str]:
        """Achieved FLOP/s for ``work`` (score: a cross-encoder; encode: a bi-encoder; train)
        on ``devices`` (default all), and where the figure comes from."""
        n = self.hw.count if devices is None else min(devices, self.hw.count)
        key = f"{work}_flop_per_s"
        if key in self.measured:
            return n * self.measured[key], f"measured {self.measured[key]:.2e} FLOP/s/device"
        rate = self.hw.rate("train" if work == "train" else "infer", n)
        return rate, f"{rate / (n * self.hw.peak_flops):.0%} of {self.hw.name} peak"

    def start(self, what: str) -> float:
        table = POOL_START_S if what == "pool" else TRAIN_START_S
        return self.measured.get(f"{what}_start_s", table[self.hw.kind])

    def teacher_starts(self) -> float:
        """Seconds to start one actor pool per teacher member; a BM25 pool loads no model."""
        return sum(
            BM25_POOL_START_S if m.kind == "bm25" else self.start("pool")
            for m in self.teacher_members()
        )

    def teacher_members(self) -> list[Any]:
        t = self.cfg.teacher
        return list(t.members) if t.kind == "ensemble" else [t]

    def pair_cost(self, member: Any, shapes: dict[str, ModelShape]) -> tuple[float, str, float]:
        """(FLOPs, their kind of work, BM25 seconds on one core) to score one pair."""
        t = self.cfg.teacher
        if member.kind == "bm25":
            return 0.0, "score", self.len.untruncated("passage", 512) / BM25_SCORE_TOKENS_PER_S
        shape = shapes[member.model]
        if member.kind == "cross_encoder":
            tokens = self.len.pair(t.max_query_length, t.max_passage_length)
            return shape.forward_flops(tokens), "score", 0.0
        # A bi-encoder encodes each passage; a batch's repeated queries are encoded once.
        p_len = getattr(member, "max_length", None) or t.max_passage_length
        return shape.forward_flops(self.len.single("passage", p_len)), "encode", 0.0

    def teacher_seconds(self, pairs: int, shapes: dict[str, ModelShape], devices: int | None):
        """(seconds on ``devices``, seconds on one device and its host's CPUs, FLOPs, the bound)
        of ``pairs`` scored by every teacher member in turn, start-ups excluded."""
        on_all = on_one = flops = 0.0
        bound = "FLOPs"
        for member in self.teacher_members():
            f, work, bm25 = self.pair_cost(member, shapes)
            seconds, tokens_bound = self._member_seconds(pairs, f, work, member.kind, devices)
            on_all += seconds + pairs * bm25 / self.cfg.teacher.actors.max_actors
            on_one += self._member_seconds(pairs, f, work, member.kind, 1)[0] + pairs * bm25
            flops += pairs * f
            bound = "tokenisation" if tokens_bound else bound
        return on_all, on_one, flops, bound

    def _member_seconds(self, pairs: int, f: float, work: str, kind: str, devices: int | None):
        """(seconds, whether tokenising bounds them) of one model member on ``devices``.

        A cross-encoder's pairs are tokenised by Ray Data tasks on every CPU beside the pool;
        they overlap a GPU pool's forward passes and precede a CPU pool's. A bi-encoder
        tokenises inside its actors, one thread each, before each forward pass."""
        if not f:
            return 0.0, False
        t, hw = self.cfg.teacher, self.hw
        n = hw.count if devices is None else min(devices, hw.count)
        compute = pairs * f / self.rate(work, devices)[0]
        q_len, p_len = t.max_query_length or t.max_passage_length, t.max_passage_length
        raw = self.len.untruncated("query", q_len) + self.len.untruncated("passage", p_len)
        tokenise = pairs * raw / TOKENIZE_TOKENS_PER_S
        if kind == "bi_encoder":
            return compute + tokenise / (n if hw.kind == "gpu" else 1), False
        if hw.kind == "gpu":
            cpus = tokenise / (n * hw.cpus)
            return max(compute, cpus), cpus > compute
        return compute + tokenise / hw.cpus, False

    def build(self) -> Plan:
        cfg = self.cfg
        models = {m.model for m in self.teacher_members() if m.kind != "bm25"}
        shapes = {ref: model_shape(ref, "teacher.model") for ref in models}
        student = model_shape(cfg.student.model, "student.model") if cfg.student.model else None
        self.plan.add("collection", "passages", f"{self.n.passages:,}", self.n.source)
        self.plan.add(
            "collection",
            "train queries / rows",
            f"{self.n.train_queries:,} / {self.n.train_rows:,}",
            self.n.source,
        )
        self.plan.add("collection", "token lengths", self._lengths_text(), self.len.source)
        self._score(shapes)
        if student is not None:
            self._train(student)
            self._eval(student, shapes)
        self._artifacts(student)
        return self.plan

    def _lengths_text(self) -> str:
        q = self.len.single("query", 10**9) - 2
        p = self.len.single("passage", 10**9) - 2
        return "max lengths" if math.isinf(p) else f"query {q:,.1f}, passage {p:,.1f} tokens"

    def _score(self, shapes: dict[str, ModelShape]) -> None:
        t, pairs = self.cfg.teacher, self.n.pairs
        gpus = self.hw.kind == "gpu" and t.actors.num_gpus > 0
        devices = int(t.actors.max_actors * t.actors.num_gpus) if gpus else None
        work, device_s, flops, bound = self.teacher_seconds(pairs, shapes, devices)
        # One pipeline over every shard: one actor pool per teacher model.
        pools = len(self.teacher_members())
        starts = self.teacher_starts()
        seconds = work + starts
        self.plan.seconds["score"] = seconds
        self.plan.add("score", "pairs to score", f"{pairs:,}", self.n.pairs_source)
        self.plan.add("score", "teacher FLOPs", _flop(flops), "2 x params x pair tokens")
        gpu_h = device_s / 3600
        basis = self.rate("encode" if t.kind == "bi_encoder" else "score", 1)[1]
        if self.hw.kind == "gpu":
            basis += f"; its host's {self.hw.cpus} vCPUs tokenising"
        self.plan.add("score", "device-hours", f"{gpu_h:,.2f}", basis)
        self.plan.add(
            "score",
            "wall time",
            _time(seconds),
            f"{bound}-bound; {pools} actor-pool start(s), {starts:.0f} s",
        )
        if gpus:
            target = self.target_hours
            need = math.ceil(gpu_h / target)
            actors = math.ceil(need / t.actors.num_gpus)
            cap = t.actors.max_actors
            note = "" if actors <= cap else f"; over teacher.actors.max_actors {cap}"
            self.plan.add(
                "score",
                f"GPUs to score in {target:g} h",
                f"{need:,} ({actors:,} actors)",
                f"device-hours (each GPU with its host's CPUs) / {target:g} h, start-ups "
                f"excluded{note}",
            )

    def _train(self, student: ModelShape) -> None:
        s, tr = self.cfg.student, self.cfg.train
        on_gpu = self.hw.kind == "gpu" and tr.use_gpu
        rate, basis = self.rate("train", tr.num_workers if on_gpu else None)
        per_row = passages_per_row(self.cfg)
        steps = tr.epochs * tr.steps_per_epoch(self.n.train_rows)
        rows = steps * tr.micro_batch * tr.grad_accum * tr.num_workers  # last batches dropped
        q_tok, p_tok = (
            self.len.single("query", s.max_query_length),
            self.len.single("passage", s.max_passage_length),
        )
        flops = 3 * student.forward_flops(q_tok + per_row * p_tok) * rows
        compute = flops / rate
        # The collate tokenises every text whole before truncating, one thread per worker.
        raw = self.len.untruncated("query", s.max_query_length) + per_row * self.len.untruncated(
            "passage", s.max_passage_length
        )
        tokenise = rows * raw / TOKENIZE_TOKENS_PER_S / (tr.num_workers if on_gpu else 1)
        # On a GPU the collate thread overlaps the step; on a CPU it takes the same cores.
        work = max(compute, tokenise) if on_gpu else compute + tokenise
        bound = "tokenisation" if on_gpu and tokenise > compute else "FLOPs"
        step_s = self.measured.get("train_step_s", TRAIN_STEP_S[self.hw.kind])
        seconds = work + steps * step_s + self.start("train")
        self.plan.seconds["train"] = seconds
        self.plan.add("train", "optimizer steps", f"{steps:,}", f"{tr.epochs} epochs")
        self.plan.add(
            "train", "student FLOPs", _flop(flops), f"3 x forward; {per_row} passages per row"
        )
        self.plan.add(
            "train",
            "epoch time",
            _time((work + steps * step_s) / tr.epochs),
            f"{bound}-bound, per epoch: compute {_time(compute / tr.epochs)} ({basis}), "
            f"tokenising {_time(tokenise / tr.epochs)}, {step_s:g} s/step",
        )
        self.plan.add("train", "wall time", _time(seconds), f"+ {self.start('train'):.0f} s start")

    def _eval(self, student: ModelShape, shapes: dict[str, ModelShape]) -> None:
        cfg, ev = self.cfg, self.cfg.eval
        n, q = self.n.passages, self.n.eval_queries
        p_len = ev.passage_max_length or cfg.student.max_passage_length
        q_len = ev.query_max_length or cfg.student.max_query_length
        dense = [s for s in ev.systems if s in ("init", "student")]
        gpus = self.hw.kind == "gpu" and ev.actors.num_gpus > 0
        devices = int(ev.actors.max_actors * ev.actors.num_gpus) if gpus else None
        rate, basis = self.rate("encode", devices)
        encode = student.forward_flops(
            n * self.len.single("passage", p_len) + q * self.len.single("query", q_len)
        )
        search = self._search_flops(ev.index.type, student.hidden)
        seconds = len(dense) * ((encode + search) / rate + self.start("pool"))
        self.plan.add(
            "eval",
            "corpus encoding",
            f"{_time(encode / rate)} per system",
            f"{len(dense)} dense systems; {basis}",
        )
        if "bm25" in ev.systems or ("teacher_rerank" in ev.systems and "bm25" in ev.rerank_sources):
            seconds += n * self.len.untruncated("passage", 512) / BM25_INDEX_TOKENS_PER_S
        if "teacher_rerank" in ev.systems:
            t = self.cfg.teacher.actors
            devices = int(t.max_actors * t.num_gpus) if self.hw.kind == "gpu" else None
            pairs = q * ev.rerank_depth * len(ev.rerank_sources)
            seconds += self.teacher_seconds(pairs, shapes, devices)[0]
            seconds += self.teacher_starts()  # one pipeline: a pool per member
        self.plan.seconds["eval"] = seconds
        self.plan.add("eval", "wall time", _time(seconds), f"{', '.join(ev.systems)}")
        for kind in ("flat", "ivf_flat", "ivf_pq", "hnsw"):
            mark = " (eval.index)" if kind == ev.index.type else ""
            mem = self._index_bytes(kind, student.hidden)
            fits = "" if self.hw.kind == "cpu" or mem < self.hw.memory_bytes else ", over 1 GPU"
            search_s = self._search_flops(kind, student.hidden) / rate
            self.plan.add(
                "index", f"{kind}{mark}", f"{_size(mem)}{fits}", f"search {_time(search_s)}"
            )

    def _index_bytes(self, kind: str, dim: int) -> float:
        n, ix = self.n.passages, self.cfg.eval.index
        centroids = ix.nlist * dim * 4
        return {
            "flat": n * dim * 4,
            "ivf_flat": n * (dim * 4 + 8) + centroids,
            "ivf_pq": n * (ix.pq_m * ix.pq_nbits / 8 + 8) + centroids,
            "hnsw": n * (dim * 4 + ix.hnsw_m * 2 * 4),  # vectors + level-0 links
        }[kind]

    def _search_flops(self, kind: str, dim: int) -> float:
        """Distance computations of the eval's queries: all passages (flat), the probed lists
        (IVF), ef_search x M per level (HNSW)."""
        n, q, ix = self.n.passages, self.n.eval_queries, self.cfg.eval.index
        visited = {
            "flat": n,
            "ivf_flat": ix.nlist + n * min(1.0, ix.nprobe / ix.nlist),
            "ivf_pq": ix.nlist + n * min(1.0, ix.nprobe / ix.nlist),
            "hnsw": ix.ef_search * ix.hnsw_m * max(1.0, math.log2(max(n, 2))),
        }[kind]
        return 2.0 * q * visited * dim

    def _artifacts(self, student: ModelShape | None) -> None:
        pairs, p_tok = self.n.pairs, self.len.single("passage", 10**9) - 2
        text = 4.5 * (p_tok if not math.isinf(p_tok) else self.cfg.teacher.max_passage_length)
        self.plan.add(
            "artifacts",
            "examples/",
            _size(pairs * (text + 3 * BYTES_PER_ID + 8)),
            "texts ~4.5 bytes/token",
        )
        self.plan.add("artifacts", "scores/", _size(pairs * (2 * BYTES_PER_ID + 8 + 4)), "")
        per_row = passages_per_row(self.cfg)
        train_b = self.n.train_rows * (per_row * (BYTES_PER_ID + 4 + 8) + 100)
        self.plan.add("artifacts", f"train/{self.cfg.candidates.strategy}/", _size(train_b), "")
        if student is not None:
            tr = self.cfg.train
            # DeepSpeed's checkpoint: fp32 master weights and Adam's two moments.
            ckpt = student.total_params * 12 * tr.num_to_keep
            self.plan.add(
                "artifacts", "checkpoints/", _size(ckpt), f"12 bytes/param x {tr.num_to_keep} kept"
            )
            emb = self.n.passages * student.hidden * 4
            self.plan.add("artifacts", "corpus embeddings", _size(emb), "fp32, per dense system")
