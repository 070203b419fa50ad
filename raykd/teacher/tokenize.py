"""CPU pre-stage of the cross-encoder: (query, text) pairs to token ids, sorted by length.

Two truncation modes:

* ``max_query_length`` set (the paper's 32 / 128): the query keeps its first ``max_query_length``
  tokens and the passage its first ``max_passage_length``, then the tokenizer's own post-processor
  adds the special tokens (``[CLS] q [SEP] p [SEP]`` for BERT, with its token type ids).
* ``max_query_length`` None: the pair is truncated jointly to ``max_passage_length`` tokens with
  ``longest_first``, exactly what ``tokenizer(queries, texts, truncation=True, max_length=L)`` does
  inside sentence-transformers' ``CrossEncoder(max_length=L)``; the P1 benchmark uses this mode so
  both sides see identical ids.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """The Hugging Face tokenizer of the model folder ``path``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def encode_pairs(
    tokenizer: Any,
    queries: list[str],
    texts: list[str],
    max_query_length: int | None,
    max_passage_length: int,
) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids (and token type ids when the model uses them) of each pair, unpadded."""
    wants_types = "token_type_ids" in tokenizer.model_input_names
    if max_query_length is None:
        enc = tokenizer(
            queries,
            texts,
            truncation="longest_first",
            max_length=max_passage_length,
            return_token_type_ids=wants_types,
            return_attention_mask=False,
        )
        return enc["input_ids"], enc["token_type_ids"] if wants_types else None
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    q_enc = backend.encode_batch(queries, add_special_tokens=False)
    p_enc = backend.encode_batch(texts, add_special_tokens=False)
    ids, types = [], []
    for q, p in zip(q_enc, p_enc, strict=True):
        q.truncate(max_query_length)
        p.truncate(max_passage_length)
        pair = backend.post_process(q, p, add_special_tokens=True)
        ids.append(pair.ids)
        types.append(pair.type_ids)
    return ids, types if wants_types else None


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Row order that groups similar lengths (stable, so equal lengths keep their input order)."""
    return np.argsort(lengths, kind="stable")


def tokenize_batch(
    batch: dict[str, np.ndarray],
    *,
    tokenizer: str,
    max_query_length: int | None,
    max_passage_length: int,
) -> dict[str, np.ndarray]:
    """Ray Data pre-stage: keys + ``input_ids`` (+ ``token_type_ids``), rows sorted by length."""
    tok = load_tokenizer(tokenizer)
    ids, types = encode_pairs(
        tok,
        [str(q) for q in batch["query"]],
        [str(t) for t in batch["text"]],
        max_query_length,
        max_passage_length,
    )
    order = length_order(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
    out = {k: np.asarray(batch[k])[order] for k in ("qid", "eid", "kind")}
    out["input_ids"] = _ragged([ids[i] for i in order])
    if types is not None:
        out["token_type_ids"] = _ragged([types[i] for i in order])
    return out


def _ragged(rows: list[list[int]]) -> np.ndarray:
    out = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        out[i] = np.asarray(r, dtype=np.int32)
    return out


def pad(rows: np.ndarray | list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest row of this batch: (ids [B, L] int64, attention mask [B, L])."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask
