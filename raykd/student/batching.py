"""Collate functions: a batch of TRAIN rows (numpy columns, as Ray Data yields them) to tensors.

Tokenisation happens here, in Ray Data's ``collate_fn``, so it overlaps with the training step.
Candidate lists may differ in length between queries: they are padded to the longest with a mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _lists(column) -> list[list]:
    return [list(x) for x in column]


def candidate_layout(n_cands: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For queries with ``1 + n_cands[i]`` passages each (positive first), flattened in order:
    ``index`` [B, K] (row of each candidate among the flattened passages, 0 at padding) and
    ``mask`` [B, K] (True = real), K = 1 + max(n_cands)."""
    sizes = torch.as_tensor([1 + n for n in n_cands], dtype=torch.long)
    k = int(sizes.max()) if len(sizes) else 1
    mask = torch.arange(k)[None, :] < sizes[:, None]
    starts = torch.cumsum(sizes, 0) - sizes
    index = (starts[:, None] + torch.arange(k)[None, :]).masked_fill(~mask, 0)
    return index, mask


def _pad(rows: list[list[float]], k: int, fill: float) -> torch.Tensor:
    out = np.full((len(rows), k), fill, dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


class StudentCollator:
    """TRAIN rows to dual-encoder inputs; see ``DualEncoder.forward`` for the keys.

    Adds ``teacher`` [B, K] (raw logits, 0 at padding), ``sup_mask`` [B, K] (the positive and the
    original negatives, kinds "pos"/"neg", for ADAM's L_sup) and ``confidence`` [B].
    """

    def __init__(self, tokenizer_dir: str, max_query_length: int, max_passage_length: int):
        self.tokenizer_dir = tokenizer_dir
        self.max_query_length = max_query_length
        self.max_passage_length = max_passage_length
        self._tok = None

    @property
    def tokenizer(self):
        # Loaded lazily: the collator is pickled to Ray Data's workers.
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        return self._tok

    def __getstate__(self):
        return {**self.__dict__, "_tok": None}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        cands = _lists(batch["cands"])
        teacher = _lists(batch["teacher"])
        kinds = _lists(batch["kinds"])
        index, mask = candidate_layout([len(c) for c in cands])
        k = mask.shape[1]
        passages = [t for pos, cs in zip(batch["pos"], cands, strict=True) for t in [pos, *cs]]
        q = self.tokenizer(
            list(batch["query"]),
            padding=True,
            truncation=True,
            max_length=self.max_query_length,
            return_tensors="pt",
        )
        p = self.tokenizer(
            passages,
            padding=True,
            truncation=True,
            max_length=self.max_passage_length,
            return_tensors="pt",
        )
        sup = np.zeros((len(kinds), k), dtype=bool)
        for i, ks in enumerate(kinds):
            sup[i, : len(ks)] = [x in ("pos", "neg") for x in ks]
        return {
            "q_ids": q["input_ids"],
            "q_mask": q["attention_mask"],
            "p_ids": p["input_ids"],
            "p_mask": p["attention_mask"],
            "cand_index": index,
            "cand_mask": mask,
            "teacher": _pad(teacher, k, 0.0),
            "sup_mask": torch.from_numpy(sup) & mask,
            "confidence": torch.tensor(np.asarray(batch["confidence"], dtype=np.float32)),
        }


class PairCollator:
    """Cross-encoder training rows (``query``, ``pos``, ``cands``) to [B * K] query-passage pairs.

    Every query has the same number of candidates here (the positive plus n negatives), so the
    logits reshape to [B, K] with the positive in column 0; ``cand_mask`` is all True.
    """

    def __init__(self, tokenizer_dir: str, max_query_length: int, max_passage_length: int):
        self.tokenizer_dir = tokenizer_dir
        self.max_length = max_query_length + max_passage_length
        self._tok = None

    tokenizer = StudentCollator.tokenizer
    __getstate__ = StudentCollator.__getstate__

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        cands = _lists(batch["cands"])
        k = 1 + len(cands[0])
        if any(1 + len(c) != k for c in cands):
            raise ValueError("cross-encoder training rows need equal-length candidate lists")
        queries = [q for q in batch["query"] for _ in range(k)]
        passages = [t for pos, cs in zip(batch["pos"], cands, strict=True) for t in [pos, *cs]]
        enc = self.tokenizer(
            queries,
            passages,
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = {f"pair_{key}": v for key, v in enc.items()}
        out["cand_mask"] = torch.ones(len(cands), k, dtype=torch.bool)
        return out
