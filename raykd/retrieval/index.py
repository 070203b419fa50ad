"""FAISS inner-product indexes over float32 embeddings: build shard by shard, search in batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from itertools import chain

import faiss
import numpy as np

from raykd.config import IndexSpec
from raykd.data.files import atomic_local

log = logging.getLogger(__name__)


def _as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return x


def _set_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    try:
        if spec.type in ("ivf_flat", "ivf_pq"):
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = min(spec.nprobe, ivf.nlist)
        elif spec.type == "hnsw":
            index.hnsw.efSearch = spec.ef_search
    except (AttributeError, RuntimeError) as e:
        kind = type(index).__name__
        raise ValueError(f"index {kind} does not match spec type {spec.type!r}") from e


def _is_gpu(index: faiss.Index) -> bool:
    gpu_index = getattr(faiss, "GpuIndex", None)  # only in GPU builds of FAISS
    return gpu_index is not None and isinstance(
        index, (gpu_index, faiss.IndexReplicas, faiss.IndexShards)
    )


def _maybe_to_gpu(index: faiss.Index, spec: IndexSpec) -> faiss.Index:
    if not spec.use_gpu:
        return index
    if faiss.get_num_gpus() == 0:
        log.warning("use_gpu requested but FAISS sees no GPU; the index stays on CPU")
        return index
    if spec.type == "hnsw":
        log.warning("FAISS has no GPU HNSW; the index stays on CPU")
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as e:  # e.g. a PQ layout the GPU kernels do not support
        log.warning("could not move the %s index to GPU (%s); it stays on CPU", spec.type, e)
        return index


def build_index(
    shards: Iterable[np.ndarray],
    dim: int,
    spec: IndexSpec | None = None,
    train_sample: np.ndarray | None = None,
) -> faiss.Index:
    """Build an inner-product index, adding ``shards`` one at a time (never concatenated).

    IVF indexes are trained on ``train_sample``, or on the first shard when it is None; training
    happens on CPU, then the index moves to GPU (when asked and available) before the adds.
    """
    spec = spec or IndexSpec()
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    if spec.type == "ivf_pq" and dim % spec.pq_m:
        raise ValueError(f"pq_m={spec.pq_m} must divide the embedding dim {dim}")
    index = faiss.index_factory(dim, spec.factory_string(), faiss.METRIC_INNER_PRODUCT)
    if spec.type == "hnsw":
        index.hnsw.efConstruction = spec.ef_construction
    elif spec.type == "ivf_pq":
        # The factory turns on polysemous training: minutes of work for a search mode never used.
        index.do_polysemous_training = False

    shards = iter(shards)
    if not index.is_trained:
        if train_sample is None:
            first = next(shards, None)
            if first is None:
                raise ValueError(f"{spec.type} needs training vectors: no shards, no train_sample")
            shards = chain([first], shards)
            train_sample = first
        sample = _as_matrix(train_sample, dim, "train_sample")
        if len(sample) < spec.min_train_size():
            raise ValueError(
                f"{spec.type} with nlist={spec.nlist} needs at least {spec.min_train_size()} "
                f"training vectors, got {len(sample)}; pass a larger train_sample or lower nlist"
            )
        index.train(sample)
    _set_search_params(index, spec)
    index = _maybe_to_gpu(index, spec)
    for i, shard in enumerate(shards):
        index.add(_as_matrix(shard, dim, f"shard {i}"))
    log.info("built %s index: %d vectors of dim %d", spec.factory_string(), index.ntotal, dim)
    return index


def search(
    index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (clipped to ``index.ntotal``) scores and row ids, ``(n, k)`` each, batched.

    Ids are row positions in add order; approximate indexes pad short result lists with -1.
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be positive, got k={k}, batch_size={batch_size}")
    queries = _as_matrix(queries, index.d, "queries")
    k = min(k, index.ntotal)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    if k == 0:
        return scores, ids
    for start in range(0, len(queries), batch_size):
        end = start + batch_size
        scores[start:end], ids[start:end] = index.search(queries[start:end], k)
    return scores, ids


def save_index(index: faiss.Index, path: str | os.PathLike[str]) -> None:
    """Write the index (a CPU copy if it lives on GPU) to a temp file, then rename into place."""
    if _is_gpu(index):
        index = faiss.index_gpu_to_cpu(index)
    with atomic_local(path) as tmp:
        faiss.write_index(index, tmp)


def load_index(path: str | os.PathLike[str], spec: IndexSpec | None = None) -> faiss.Index:
    """Read an index; with ``spec``, apply its search parameters (nprobe, efSearch) and GPU choice.

    Without ``spec`` the search parameters saved with the index are kept.
    """
    index = faiss.read_index(str(path))
    if spec is not None:
        _set_search_params(index, spec)
        index = _maybe_to_gpu(index, spec)
    return index
