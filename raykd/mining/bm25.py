"""BM25 over a prepared corpus with bm25s: built by streaming the corpus Parquet, held in memory.

Used by the ``mine`` stage (bm25 pools) and by eval (the BM25 baseline). Passages are indexed as
``passage_text(title, text)``; lower-casing, stopwords and an optional PyStemmer stemmer apply to
passages and queries alike. No stemming is the default, as in bm25s (and the SciFact reference).
"""

from __future__ import annotations

import logging
import time
from array import array

import bm25s
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from bm25s.tokenization import Tokenizer

from raykd.config import Bm25Spec
from raykd.data.files import filesystem
from raykd.data.passages import passage_texts
from raykd.run_dir import RunDir

log = logging.getLogger(__name__)

_BATCH = 1 << 14


def _stemmer(language: str | None):
    if language is None:
        return None
    import Stemmer

    return Stemmer.Stemmer(language)


def _stopwords(name: str | None) -> str | list[str]:
    # bm25s reads a falsy value as "no stopwords" but rejects None in its type checks.
    return name if name else []


class BM25Retriever:
    """A bm25s index plus the pid of each indexed row."""

    def __init__(self, model: bm25s.BM25, tokenizer: Tokenizer, pids: pa.Array) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pids = pids

    def __len__(self) -> int:
        return len(self.pids)

    @classmethod
    def for_run(cls, run: RunDir, spec: Bm25Spec) -> BM25Retriever:
        """BM25 over a run's prepared corpus (``spec``: the job's ``mining.bm25``)."""
        return cls.from_corpus(run.path("corpus"), run.fs, spec)

    @classmethod
    def from_corpus(
        cls,
        corpus: str,
        fs: pafs.FileSystem | None = None,
        spec: Bm25Spec | None = None,
    ) -> BM25Retriever:
        """Index a prepared corpus folder (Parquet with pid/title/text) batch by batch.

        ``corpus`` is a path inside ``fs``, or a local path / URI when ``fs`` is None. Only token
        ids (int32 arrays) are kept per passage, never the texts.
        """
        if fs is None:
            fs, corpus = filesystem(corpus)
        spec = spec or Bm25Spec()
        tokenizer = Tokenizer(stopwords=_stopwords(spec.stopwords), stemmer=_stemmer(spec.stemmer))
        ids: list[array] = []
        pids: list[pa.Array] = []
        start = time.perf_counter()
        dataset = pads.dataset(corpus, filesystem=fs, format="parquet")
        for batch in dataset.to_batches(columns=["pid", "title", "text"], batch_size=_BATCH):
            texts = passage_texts(batch)
            for doc in tokenizer.streaming_tokenize(texts, update_vocab=True):
                ids.append(array("i", doc))
            pids.append(batch.column("pid"))
            log.info("bm25: tokenised %d passages", len(ids))
        if not ids:
            raise ValueError(f"{corpus}: the corpus is empty")
        model = bm25s.BM25(k1=spec.k1, b=spec.b)
        model.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        log.info(
            "bm25: indexed %d passages in %.1f s (%.0f passages/s)",
            len(ids),
            time.perf_counter() - start,
            len(ids) / max(time.perf_counter() - start, 1e-9),
        )
        return cls(model, tokenizer, pa.concat_arrays(pids))

    def retrieve(self, query_texts: list[str], k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-``k`` (clipped to the corpus size) pids and scores per query, best first.

        Returns ``(pids, scores)``: a list of ``len(query_texts)`` pid lists and a float32
        ``(n, k)`` score matrix. A query with no indexed term scores every passage 0.
        """
        if not query_texts:
            return [], np.zeros((0, 0), dtype=np.float32)
        k = min(k, len(self))
        query_ids = list(self.tokenizer.streaming_tokenize(query_texts, update_vocab=False))
        rows, scores = self.model.retrieve(query_ids, k=k, show_progress=False, n_threads=1)
        rows = np.asarray(rows, dtype=np.int64)
        flat = self.pids.take(pa.array(rows.reshape(-1))).to_pylist()
        pids = [flat[i * k : (i + 1) * k] for i in range(len(query_texts))]
        return pids, np.asarray(scores, dtype=np.float32)
