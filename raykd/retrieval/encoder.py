"""A Hugging Face encoder with pooling: texts to vectors.

Shared by dense mining, the bi-encoder teacher, corpus encoding for eval and the student model,
so that pooling and normalisation are defined once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from raykd.models import autocast_dtype, resolve_model

Pooling = Literal["cls", "mean"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, T, d] hidden states and [B, T] mask to [B, d] by CLS or masked mean."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextEncoder:
    """Loads ``AutoModel`` + ``AutoTokenizer`` once; ``encode`` returns float32 [N, d]."""

    def __init__(
        self,
        model: str,
        *,
        pooling: Pooling = "mean",
        normalize: bool = True,
        max_length: int = 256,
        device: str | None = None,
        dtype: str = "fp32",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.autocast = autocast_dtype(self.device.type, dtype)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        # Length-sorted batches carry little padding; the original order is restored at the end.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.autocast(
                self.device.type,
                dtype=self.autocast or torch.float32,
                enabled=self.autocast is not None,
            ):
                hidden = self.model(**enc).last_hidden_state
            vec = pool(hidden.float(), enc["attention_mask"], self.pooling)
            if self.normalize:
                vec = F.normalize(vec, dim=-1)
            out.append(vec.cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = np.concatenate(out).astype(np.float32, copy=False)
        result = np.empty_like(vecs)
        result[order] = vecs
        return result
