"""Okapi BM25 (Lucene variant) of a query against any text, with a corpus's statistics.

A BM25 teacher must score texts that are not in the corpus (dark examples: ``p+ [SEP] p-``,
masked positives), so it cannot read scores off an inverted index. Instead the corpus statistics
(N, document frequencies, average length) are collected once in a streaming pass, and each
(query, text) pair is scored from the text's own term counts:

    score(q, d) = sum over query tokens t with df(t) > 0 (repeats count) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

This is bm25s' ``method="lucene"`` and its tokenisation (lowercase, the ``(?u)\\b\\w\\w+\\b``
regex, stopwords dropped before optional PyStemmer stemming, ``|d|`` counted after stopwords),
so a corpus passage scores exactly what ``bm25s.BM25(k1, b, method="lucene")`` gives it.
bm25s stems nothing by default; ``stemmer="english"`` matches ``stemmer=Stemmer("english")``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from raykd.data.passages import passage_text
from raykd.teacher.base import ScorerSpec, TeacherEnv, register_teacher

log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")


class Bm25Tokenizer:
    """bm25s' tokenisation as a function of one text (the stemmer is rebuilt after unpickling)."""

    def __init__(self, stopwords: str | None = "en", stemmer: str | None = None) -> None:
        from bm25s.tokenization import Tokenizer

        self.stopwords_name = stopwords
        self.stemmer_name = stemmer
        self.stopwords = frozenset(Tokenizer(stopwords=stopwords).stopwords if stopwords else ())
        self._stem_cache: dict[str, str] = {}
        self._stem = None
        if stemmer is not None:
            import Stemmer

            self._stem = Stemmer.Stemmer(stemmer).stemWord

    def __call__(self, text: str) -> list[str]:
        words = [w for w in TOKEN_PATTERN.findall(text.lower()) if w not in self.stopwords]
        if self._stem is None:
            return words
        cache = self._stem_cache
        out = []
        for w in words:
            s = cache.get(w)
            if s is None:
                s = cache[w] = self._stem(w)
            out.append(s)
        return out

    def __reduce__(self):
        return (Bm25Tokenizer, (self.stopwords_name, self.stemmer_name))


@dataclass
class CorpusStats:
    """What BM25 needs from the corpus: N, total length and document frequencies (picklable)."""

    stopwords: str | None = "en"
    stemmer: str | None = None
    n_docs: int = 0
    total_len: int = 0
    df: dict[str, int] = field(default_factory=dict)

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0

    def tokenizer(self) -> Bm25Tokenizer:
        return Bm25Tokenizer(self.stopwords, self.stemmer)

    def add(self, texts: Iterable[str], tokenizer: Bm25Tokenizer | None = None) -> CorpusStats:
        """Count more documents in (streaming); returns self."""
        tok = tokenizer or self.tokenizer()
        df = self.df
        for text in texts:
            tokens = tok(text)
            self.n_docs += 1
            self.total_len += len(tokens)
            for t in set(tokens):
                df[t] = df.get(t, 0) + 1
        return self

    def merge(self, other: CorpusStats) -> CorpusStats:
        """Add the counts of a disjoint part of the corpus; returns self."""
        if (other.stopwords, other.stemmer) != (self.stopwords, self.stemmer):
            raise ValueError("cannot merge corpus statistics of different tokenisations")
        self.n_docs += other.n_docs
        self.total_len += other.total_len
        for t, n in other.df.items():
            self.df[t] = self.df.get(t, 0) + n
        return self


def corpus_stats_from_parquet(
    path: str, filesystem=None, *, stopwords: str | None = "en", stemmer: str | None = None
) -> CorpusStats:
    """Stream a ``corpus/`` Parquet folder (pid, text, title) batch by batch into CorpusStats."""
    import pyarrow.dataset as pads

    from raykd.console import progress
    from raykd.data.acero import count_rows

    stats = CorpusStats(stopwords=stopwords, stemmer=stemmer)
    tok = stats.tokenizer()
    dataset = pads.dataset(path, format="parquet", filesystem=filesystem)
    with progress("bm25 corpus stats", count_rows(dataset), "docs") as bar:
        for batch in dataset.to_batches(columns=["title", "text"], batch_size=8192):
            titles, texts = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            stats.add((passage_text(t, x) for t, x in zip(titles, texts, strict=True)), tok)
            bar.update(batch.num_rows)
    return stats


class Bm25Scorer:
    """Scores (query, text) pairs with BM25 against fixed corpus statistics."""

    def __init__(self, stats: CorpusStats, k1: float = 1.5, b: float = 0.75) -> None:
        if stats.n_docs == 0:
            raise ValueError("BM25 needs a non-empty corpus")
        self.stats, self.k1, self.b = stats, k1, b
        self.tokenize = stats.tokenizer()
        self._queries: dict[str, list[tuple[str, float]]] = {}

    def _query_terms(self, query: str) -> list[tuple[str, float]]:
        """(token, idf) for each query token the corpus knows, repeats kept as bm25s keeps them."""
        terms = self._queries.get(query)
        if terms is None:
            n, df = self.stats.n_docs, self.stats.df
            terms = [
                (t, math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)))
                for t in self.tokenize(query)
                if df.get(t, 0) > 0
            ]
            if len(self._queries) > 100_000:  # bounded: an actor sees many batches
                self._queries.clear()
            self._queries[query] = terms
        return terms

    def score_one(self, query: str, text: str) -> float:
        terms = self._query_terms(query)
        if not terms:
            return 0.0
        tokens = self.tokenize(text)
        tf = Counter(tokens)
        norm = self.k1 * (1.0 - self.b + self.b * len(tokens) / self.stats.avgdl)
        total = 0.0
        for t, idf in terms:
            f = tf.get(t, 0)
            if f:
                total += idf * f / (f + norm)
        return total

    def score(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Row-wise scores of ``queries[i]`` against ``texts[i]`` (float32)."""
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries for {len(texts)} texts")
        return np.array(
            [self.score_one(q, t) for q, t in zip(queries, texts, strict=True)], dtype=np.float32
        )


class Bm25Actor:
    """Scoring actor: BM25 scores of a batch of (query, text) rows on CPU."""

    def __init__(self, stats: CorpusStats, k1: float, b: float) -> None:
        self.scorer = Bm25Scorer(stats, k1, b)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "qid": batch["qid"],
            "eid": batch["eid"],
            "kind": batch["kind"],
            "score": self.scorer.score(batch["query"], batch["text"]),
        }


@register_teacher("bm25")
def build_bm25(cfg, env: TeacherEnv) -> ScorerSpec:
    """BM25 (``cfg.bm25``) with the run's ``corpus/`` statistics, counted once here and shared
    by the actors (``ScorerSpec.shared``)."""
    import time

    start = time.perf_counter()
    spec = cfg.bm25
    stats = corpus_stats_from_parquet(
        env.run.path("corpus"), env.run.fs, stopwords=spec.stopwords, stemmer=spec.stemmer
    )
    wall = time.perf_counter() - start
    log.info(
        "bm25 teacher: %d docs, %d terms, avgdl %.1f (%.0f docs/s)",
        stats.n_docs,
        len(stats.df),
        stats.avgdl,
        stats.n_docs / max(wall, 1e-9),
    )
    return ScorerSpec(
        name="bm25",
        actor_cls=Bm25Actor,
        actors=env.job.teacher.actors,
        actor_kwargs={"k1": spec.k1, "b": spec.b},
        shared={"stats": stats},
        num_cpus=1,
    )
