"""Corpus embeddings: the encoding actor, and reading the embeddings back one shard at a time.

``EncodeBatch`` turns an Arrow batch of a prepared corpus (``pid``, ``title``, ``text``) into one
of ``pid`` (string) and ``embedding`` (``fixed_size_list<float32>[dim]``); passages are encoded as
``passage_text(title, text)``, the one convention every stage uses. ``raykd.on_ray.encoding``
runs it in a Ray Data actor pool and writes the batches as Parquet shards.

``iter_embedding_shards`` yields ``(pids, float32 [n, dim])`` per file in file-name order, which
is what ``raykd.retrieval.index.build_index`` adds shard by shard; collect the pids in the same
order to map FAISS row ids back::

    pids = []
    def shards():
        for shard_pids, vecs in iter_embedding_shards(uri):
            pids.extend(shard_pids)
            yield vecs
    index = build_index(shards(), dim, spec)
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raykd.data.acero import count_rows
from raykd.data.files import filesystem
from raykd.data.passages import passage_texts

log = logging.getLogger(__name__)


class EncodeBatch:
    """One ``TextEncoder`` per actor: Arrow batches of passages in, of embeddings out."""

    def __init__(
        self,
        model: str,
        pooling: str,
        normalize: bool,
        max_length: int,
        dtype: str,
        batch_size: int,
        torch_threads: int | None = None,
    ) -> None:
        from raykd.retrieval.encoder import TextEncoder

        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)

        self.encoder = TextEncoder(
            model, pooling=pooling, normalize=normalize, max_length=max_length, dtype=dtype
        )
        self.batch_size = batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        """``pid``, ``title``, ``text`` [n] -> ``pid`` [n], ``embedding`` float32 [n, dim]."""
        texts = passage_texts(batch)
        vecs = self.encoder.encode(texts, batch_size=self.batch_size)
        emb = pa.FixedSizeListArray.from_arrays(
            pa.array(vecs.reshape(-1), type=pa.float32()), vecs.shape[1]
        )
        return pa.table({"pid": batch.column("pid"), "embedding": emb})


def write_embedding_shard(batch: pa.Table, out_uri: str) -> pa.Table:
    """Write one block of ``pid``, ``embedding`` rows under ``out_uri``; returns its ``rows``.

    The file is named after its pids, so a retried task overwrites its own earlier attempt
    instead of adding a duplicate.
    """
    if batch.num_rows == 0:
        return pa.table({"rows": pa.array([], pa.int64())})
    fs, root = filesystem(out_uri)
    digest = hashlib.sha1("\n".join(batch.column("pid").to_pylist()).encode()).hexdigest()
    fs.create_dir(root, recursive=True)
    pq.write_table(batch, f"{root}/part-{digest[:20]}.parquet", filesystem=fs)
    return pa.table({"rows": [batch.num_rows]})


def count_embeddings(uri: str) -> int:
    """Rows of the embedding shards under ``uri``."""
    return count_rows(_open(uri))


def _open(uri: str) -> pads.Dataset:
    fs, path = filesystem(uri)
    return pads.dataset(path, filesystem=fs, format="parquet")


def _embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``list<float32>`` or ``fixed_size_list<float32>`` rows to a float32 ``[n, d]`` matrix."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size % n:
        raise ValueError("embedding rows have different lengths")
    return flat.reshape(n, flat.size // n)


def iter_embedding_shards(uri: str) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield ``(pids, float32 [n, dim])`` for each Parquet file under ``uri``, in name order.

    Only one shard is in memory at a time; empty files are skipped.
    """
    fs, root = filesystem(uri)
    files = sorted(
        i.path
        for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
        if i.is_file and i.path.endswith(".parquet")
    )
    for path in files:
        table = pq.read_table(path, filesystem=fs, columns=["pid", "embedding"])
        if table.num_rows == 0:
            continue
        log.debug("embedding shard %s: %d rows", posixpath.basename(path), table.num_rows)
        yield table.column("pid").to_pylist(), _embedding_matrix(table.column("embedding"))
