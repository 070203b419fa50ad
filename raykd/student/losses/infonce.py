"""Contrastive InfoNCE, L_sup of ADAM (Tao et al., Findings of ACL 2024, §3.1).

Modelled on sentence-transformers' MultipleNegativesRankingLoss, with a temperature instead of a
scale (``scale = 1 / temperature``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykd.student.losses._common import upcast, valid_mask


def info_nce(
    scores: torch.Tensor, *, temperature: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over queries of -log softmax(scores / temperature)[:, 0].

    scores: [B, 1 + n] student scores, the positive in column 0 and the negatives after it.
    mask: bool [B, 1 + n], True = real candidate (padding excluded); column 0 must be True.
    Returns a scalar.
    """
    mask = valid_mask(scores, mask)
    if not mask[:, 0].all():
        raise ValueError("column 0 (the positive) must be valid in every row")
    logits = (upcast(scores) / temperature).masked_fill(~mask, float("-inf"))
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def in_batch_info_nce(
    q: torch.Tensor,
    p: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    c_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives, from embeddings (dot-product scores).

    q: [B, d] queries, p: [B, d] their positives, c: [B, n, d] hard negatives per query (optional),
    c_mask: bool [B, n], True = real candidate. Logits are [B, B + B*n]:
    ``q @ [p_0..p_{B-1}, c_{0,0}..c_{B-1,n-1}]^T / temperature``, so each query scores every
    positive and every hard negative of the batch; the target of row i is column i. Invalid
    candidates are masked out of every row. Returns a scalar.
    """
    if q.shape != p.shape or q.dim() != 2:
        raise ValueError(f"q and p must both be [B, d], got {tuple(q.shape)}, {tuple(p.shape)}")
    q, p = upcast(q), upcast(p)
    docs, keep = p, torch.ones(p.shape[0], dtype=torch.bool, device=p.device)
    if c is not None:
        b, n, d = c.shape
        if b != q.shape[0] or d != q.shape[1]:
            raise ValueError(
                f"c must be [B, n, d] = [{q.shape[0]}, n, {q.shape[1]}], got {c.shape}"
            )
        c_keep = torch.ones(b, n, dtype=torch.bool, device=c.device) if c_mask is None else c_mask
        docs = torch.cat([p, upcast(c).reshape(b * n, d)])
        keep = torch.cat([keep, c_keep.to(device=p.device, dtype=torch.bool).reshape(b * n)])
    logits = (q @ docs.T / temperature).masked_fill(~keep, float("-inf"))
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, target)
