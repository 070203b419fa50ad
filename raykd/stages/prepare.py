"""The ``prepare`` stage: ingest a collection into the run directory's Parquet artifacts.

The corpus streams through Ray Data (never whole in the driver); queries and qrels are small and
read in the driver. Qrels are checked against the queries and, by a streaming scan of the staged
corpus' pid column, against the corpus.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from raykd.config import DataSection, JobConfig
from raykd.data.acero import count_rows
from raykd.data.files import filesystem
from raykd.data.lines import open_input
from raykd.data.readers import corpus_path, read_qrels, read_queries, split_paths
from raykd.data.schemas import QRELS, QUERIES
from raykd.errors import InputError
from raykd.on_ray.corpus_source import CorpusSource
from raykd.on_ray.errors import unwrap_ray_error
from raykd.stages.pipeline import StageContext, StageResult

log = logging.getLogger(__name__)


def data_root(data: DataSection) -> tuple[str, str]:
    """(format to read, root folder); the demo format generates its collection first."""
    if data.format == "demo":
        from raykd.data.demo import default_demo_dir, write_demo_collection

        paths = write_demo_collection(data.path or default_demo_dir(), seed=data.seed)
        return "beir", str(paths.root)
    if not data.path:
        raise InputError("data.path", f"data.path is required for format {data.format!r}")
    root = data.path.rstrip("/")
    fs, inner = filesystem(root)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        raise InputError(root, f"no such folder (data.path, format {data.format!r})")
    return data.format, root


def input_files(data: DataSection) -> list[str]:
    fmt, root = data_root(data)
    files = [corpus_path(fmt, root)]
    for split in dict.fromkeys((data.splits.train, data.splits.eval)):
        files.extend(split_paths(fmt, root, split))
    return files


def hash_inputs(cfg: JobConfig) -> dict[str, str]:
    """Content hashes of the input files (provenance, and re-run when the data changes)."""
    out = {}
    for path in input_files(cfg.data):
        fs, inner = open_input(path)
        selector = [inner]
        info = fs.get_file_info(inner)
        if info.type == pa.fs.FileType.Directory:
            sel = pa.fs.FileSelector(inner, recursive=True)
            selector = sorted(i.path for i in fs.get_file_info(sel) if i.is_file)
        digest = hashlib.sha256()
        for p in selector:
            with fs.open_input_stream(p) as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
        out[path] = digest.hexdigest()
    return out


def _subset(qids: list[str], cap: int | None, seed: int) -> list[str]:
    if cap is None or cap >= len(qids):
        return qids
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(qids), size=cap, replace=False))
    return [qids[i] for i in keep]


def _unknown_pids(corpus_dir: str, fs, needed: set[str]) -> set[str]:
    """The pids in ``needed`` that the (staged) corpus lacks, scanning only its pid column."""
    wanted = pa.array(sorted(needed), type=pa.string())
    found: set[str] = set()
    for batch in pads.dataset(corpus_dir, filesystem=fs, format="parquet").to_batches(
        columns=["pid"], batch_size=1 << 17
    ):
        col = batch.column(0)
        found.update(col.filter(pc.is_in(col, value_set=wanted)).to_pylist())
    return needed - found


def run_prepare(ctx: StageContext) -> StageResult:
    """Queries and qrels first (small files: a typo fails before the corpus ingest), then the
    corpus on Ray Data, then the qrels' passage ids against it."""
    data = ctx.cfg.data
    fmt, root = data_root(data)
    result = StageResult()
    corpus_file = corpus_path(fmt, root)
    open_input(corpus_file)
    unit = "row" if fmt == "parquet" else "line"
    queries_cache: dict[str, dict[str, str]] = {}
    splits: dict[str, tuple[str, str, dict, dict]] = {}
    for role, split in {"train": data.splits.train, "eval": data.splits.eval}.items():
        q_path, r_path = split_paths(fmt, root, split)
        if q_path not in queries_cache:
            queries_cache[q_path] = read_queries(q_path, fmt)
        queries = queries_cache[q_path]
        qrels, where = read_qrels(r_path, fmt)
        for qid, docs in qrels.items():
            if qid not in queries:
                pid = next(iter(docs))
                raise InputError(
                    r_path, f"qid {qid!r} is not in {q_path}", **{unit: where[(qid, pid)]}
                )
        if not any(r > 0 for d in qrels.values() for r in d.values()):
            raise InputError(r_path, f"no query of split {split!r} has a positive judgement")
        splits[role] = (split, r_path, qrels, where)

    with unwrap_ray_error():
        ds = ray.data.read_datasource(CorpusSource(corpus_file, fmt))
        ds.write_parquet(ctx.staging.uri("corpus"))
    corpus_dir = ctx.staging.path("corpus")
    result.rows["corpus"] = count_rows(pads.dataset(corpus_dir, filesystem=ctx.run.fs))

    for role, (split, r_path, qrels, where) in splits.items():
        missing = _unknown_pids(corpus_dir, ctx.run.fs, {p for d in qrels.values() for p in d})
        if missing:
            qid, pid = min(
                ((q, p) for q, d in qrels.items() for p in d if p in missing), key=where.get
            )
            raise InputError(
                r_path,
                f"pid {pid!r} (query {qid!r}) is not in the corpus {corpus_file}",
                **{unit: where[(qid, pid)]},
            )
        queries = queries_cache[split_paths(fmt, root, split)[0]]
        positive = sorted(q for q, d in qrels.items() if any(r > 0 for r in d.values()))
        dropped = len(qrels) - len(positive)
        cap = data.max_train_queries if role == "train" else data.max_eval_queries
        qids = _subset(positive, cap, data.seed)
        _write(
            ctx.staging.path(f"queries/{split}/part-0.parquet"),
            ctx,
            pa.table([qids, [queries[q] for q in qids]], schema=QUERIES),
        )
        rows = [(q, p, r) for q in qids for p, r in sorted(qrels[q].items())]
        _write(
            ctx.staging.path(f"qrels/{split}/part-0.parquet"),
            ctx,
            pa.table([list(c) for c in zip(*rows, strict=True)], schema=QRELS),
        )
        result.rows[f"queries/{split}"] = len(qids)
        result.rows[f"qrels/{split}"] = len(rows)
        result.info[f"{split}_queries_without_positive"] = dropped
        if dropped:
            log.warning(
                "%s: %d queries have no positive judgement and are left out", r_path, dropped
            )
    result.info["source"] = {"format": data.format, "root": root}
    result.count = (result.rows["corpus"], "passages")
    return result


def _write(path: str, ctx: StageContext, table: pa.Table) -> None:
    ctx.run.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=ctx.run.fs)
