"""ADAM dark examples: the text conventions every stage shares, and the masking maths.

Conventions (the score and build stages reuse these, so there is exactly one of each):

- ``passage_text(title, text)``: ``"{title} {text}"`` when the title is non-empty, else ``text``.
- Reinforced negative: ``rein_text(p_pos, p_neg, sep)`` = ``"{p+} {sep} {p-}"``.
- Noisy positive: ``mask_text(...)`` = ``p+`` with ``round(r * n)`` of its ``n`` word pieces
  (special tokens excluded) replaced by the mask token; positions come from a RNG keyed by
  ``(seed, qid, pid, r)``, so an example is identical across runs and batchings.
- Example ids: ``eid_pos``, ``eid_neg``, ``eid_rein``, ``eid_mask`` (readable and stable).

Import-light on purpose (no torch, no transformers at import time).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from raykd.data.schemas import KINDS

KIND_ORDER = {k: i for i, k in enumerate(KINDS)}
LITERAL_SEP = "[SEP]"
LITERAL_MASK = "[MASK]"


def rein_text(p_pos: str, p_neg: str, sep: str) -> str:
    """A reinforced negative (ADAM §3.3, N_mix): the positive and the negative joined by the
    tokenizer's separator, ``p+ [SEP] p-``.
    """
    return f"{p_pos} {sep} {p_neg}"


def eid_pos(qid: str, pid: str) -> str:
    """Example id of a positive: ``qid|pos|pid``."""
    return f"{qid}|pos|{pid}"


def eid_neg(qid: str, pid: str) -> str:
    """Example id of a pool negative: ``qid|neg|pid``."""
    return f"{qid}|neg|{pid}"


def eid_rein(qid: str, pid: str, pid2: str) -> str:
    """Example id of the reinforced negative of positive ``pid`` and negative ``pid2``."""
    return f"{qid}|rein|{pid}|{pid2}"


def eid_mask(qid: str, pid: str, ratio: float) -> str:
    """Example id of the masked positive ``pid`` at ``ratio`` (two decimals)."""
    return f"{qid}|mask|{pid}|{ratio:.2f}"


def mask_rng(seed: int, qid: str, pid: str, ratio: float) -> np.random.Generator:
    """A generator that depends only on (seed, qid, pid, ratio): never on order or batching."""
    return _keyed_rng(f"{seed}|{qid}|{pid}|{ratio:.2f}")


def rein_rng(seed: int, qid: str) -> np.random.Generator:
    """The generator choosing a query's twinned negatives (``augment.rein_pick: random``)."""
    return _keyed_rng(f"{seed}|{qid}|rein")


def _keyed_rng(key: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    )


def mask_positions(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """``round(ratio * n)`` distinct positions in ``[0, n)``, sorted."""
    k = round(ratio * n)
    return np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)


def mask_text(text: str, ratio: float, rng: np.random.Generator, tokenizer: Any = None) -> str:
    """``text`` with a fraction ``ratio`` of its tokens replaced by the mask token.

    With a Hugging Face tokenizer the tokens are its word pieces and the result is joined with
    ``convert_tokens_to_string``, so re-tokenising it yields exactly the masked count of mask
    tokens. Without one (a BM25-only teacher), whitespace words and a literal ``[MASK]``.
    """
    if tokenizer is None:
        tokens = text.split()
        mask = LITERAL_MASK
    else:
        tokens = tokenizer.tokenize(text)
        mask = tokenizer.mask_token or LITERAL_MASK
    for i in mask_positions(len(tokens), ratio, rng):
        tokens[i] = mask
    if tokenizer is None:
        return " ".join(tokens)
    return tokenizer.convert_tokens_to_string(tokens)


def tokenizer_ref(
    augment_tokenizer: str | None,
    teacher_kind: str,
    teacher_model: str | None,
    members: list[Any],
) -> str | None:
    """The model whose tokenizer defines ``[SEP]``/``[MASK]``, or None for the literals.

    ``augment.tokenizer``, else the cross/bi-encoder teacher's model (a fine-tuned teacher keeps
    its base tokenizer), else the first neural ensemble member's model.
    """
    if augment_tokenizer:
        return augment_tokenizer
    if teacher_kind in ("cross_encoder", "bi_encoder") and teacher_model:
        return teacher_model
    if teacher_kind == "ensemble":
        for m in members:
            if m.kind in ("cross_encoder", "bi_encoder") and m.model:
                return m.model
    return None


def load_tokenizer(ref: str | None) -> Any:
    """The tokenizer at ``ref`` (HF id, folder or ``python:`` package), or None for literal
    [SEP] / [MASK] on whitespace words.
    """
    if ref is None:
        return None
    from transformers import AutoTokenizer

    from raykd.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(ref))


def sep_token(tokenizer: Any) -> str:
    """The tokenizer's separator token, or the literal ``[SEP]`` without one."""
    return (tokenizer.sep_token if tokenizer is not None else None) or LITERAL_SEP
