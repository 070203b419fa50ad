"""The dual-encoder student: score(q, p) = scale * <E_q(q), E_p(p)> (ADAM Eq. 1).

Saved layout (``save``), loadable by ``transformers.AutoModel``, ``SentenceTransformer(dir)`` and
``raykd.retrieval.encoder.TextEncoder(dir, pooling, normalize)``::

    dir/                    the passage tower (the only tower when towers are shared): HF weights,
                            config, tokenizer, plus modules.json, sentence_bert_config.json,
                            1_Pooling/config.json and, when normalised, 2_Normalize/
    dir/query_encoder/      separate towers only: the query tower in the same layout
    dir/raykd_student.json  pooling, normalize, scale, shared_towers, max lengths

With separate towers, tools that know one tower only (sentence-transformers, TextEncoder) encode
passages; encode queries with ``dir/query_encoder`` (``query_tower_dir``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from raykd.models import resolve_model
from raykd.retrieval.encoder import Pooling, pool

QUERY_DIR = "query_encoder"
META = "raykd_student.json"


class DualEncoder(nn.Module):
    """The student: query and passage towers (one shared by default) with mean or CLS pooling;
    ``score = scale * <q, p>`` (cosine when ``normalize``); ``forward`` gives the scores [B, K]
    of each query against its own candidates (positive first)."""

    def __init__(
        self,
        query_tower: nn.Module,
        passage_tower: nn.Module | None = None,
        *,
        pooling: Pooling = "mean",
        normalize: bool = True,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.query_tower = query_tower
        # None = shared towers; registering the same module twice would duplicate it in ZeRO.
        self.passage_tower = passage_tower
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.scale = scale

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        pooling: Pooling = "mean",
        normalize: bool = True,
        shared_towers: bool = True,
        scale: float = 1.0,
    ) -> DualEncoder:
        """Both towers from one HF model (id, local dir, ``python:<pkg>``) or a saved student."""
        from transformers import AutoModel

        path = resolve_model(model)
        query_path = query_tower_dir(path) if os.path.isdir(path) else path
        passage = AutoModel.from_pretrained(path)
        if shared_towers:
            return cls(passage, None, pooling=pooling, normalize=normalize, scale=scale)
        query = AutoModel.from_pretrained(query_path)
        return cls(query, passage, pooling=pooling, normalize=normalize, scale=scale)

    @property
    def shared_towers(self) -> bool:
        return self.passage_tower is None

    def gradient_checkpointing_enable(self) -> None:
        for tower in self.towers():
            tower.gradient_checkpointing_enable()

    def towers(self) -> list[nn.Module]:
        return [self.query_tower] + ([] if self.passage_tower is None else [self.passage_tower])

    def _embed(self, tower: nn.Module, input_ids, attention_mask) -> torch.Tensor:
        hidden = tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vec = pool(hidden, attention_mask, self.pooling)
        return F.normalize(vec, dim=-1) if self.normalize else vec

    def encode_query(self, input_ids, attention_mask) -> torch.Tensor:
        return self._embed(self.query_tower, input_ids, attention_mask)

    def encode_passage(self, input_ids, attention_mask) -> torch.Tensor:
        tower = self.query_tower if self.passage_tower is None else self.passage_tower
        return self._embed(tower, input_ids, attention_mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scores [B, K] of each query against its own candidate list (positive first).

        batch: ``q_ids``/``q_mask`` [B, Tq], ``p_ids``/``p_mask`` [N, Tp] (every real passage of
        the batch, flattened), ``cand_index`` [B, K] (row of each candidate in the passages,
        0 at padding) and ``cand_mask`` [B, K]. Padded columns hold 0; mask them in the loss.
        Also returns the embeddings (``q`` [B, d], ``p`` [N, d]) for in-batch negatives.
        """
        q = self.encode_query(batch["q_ids"], batch["q_mask"])
        p = self.encode_passage(batch["p_ids"], batch["p_mask"])
        cands = p[batch["cand_index"]]  # [B, K, d]
        scores = self.scale * torch.einsum("bd,bkd->bk", q, cands)
        return {"scores": scores.masked_fill(~batch["cand_mask"], 0.0), "q": q, "p": p}

    def save(
        self,
        dest: str | Path,
        tokenizer,
        *,
        max_query_length: int,
        max_passage_length: int,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write the layout described in the module docstring (fp32 weights).

        ``state_dict``: weights of this module (e.g. consolidated from ZeRO-3 shards); default the
        module's own.
        """
        dest = Path(dest)
        state = self.state_dict() if state_dict is None else state_dict
        passage_prefix = "query_tower." if self.shared_towers else "passage_tower."
        _save_tower(
            self.query_tower if self.shared_towers else self.passage_tower,
            _sub_state(state, passage_prefix),
            dest,
            tokenizer,
            self.pooling,
            self.normalize,
            max_passage_length,
        )
        if not self.shared_towers:
            _save_tower(
                self.query_tower,
                _sub_state(state, "query_tower."),
                dest / QUERY_DIR,
                tokenizer,
                self.pooling,
                self.normalize,
                max_query_length,
            )
        meta = {
            "pooling": self.pooling,
            "normalize": self.normalize,
            "scale": self.scale,
            "shared_towers": self.shared_towers,
            "max_query_length": max_query_length,
            "max_passage_length": max_passage_length,
        }
        (dest / META).write_text(json.dumps(meta, indent=2) + "\n")


def query_tower_dir(student_dir: str | Path) -> str:
    """The directory holding a saved student's query tower (itself when towers are shared)."""
    sub = Path(student_dir) / QUERY_DIR
    return str(sub if sub.is_dir() else student_dir)


def load_student(student_dir: str | Path) -> DualEncoder:
    """A saved student with the pooling, normalisation, scale and towers it was trained with."""
    meta = json.loads((Path(student_dir) / META).read_text())
    return DualEncoder.from_pretrained(
        str(student_dir),
        pooling=meta["pooling"],
        normalize=meta["normalize"],
        shared_towers=meta["shared_towers"],
        scale=meta["scale"],
    )


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}


def _save_tower(
    tower, state, dest: Path, tokenizer, pooling: Pooling, normalize: bool, max_len: int
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tower.save_pretrained(dest, state_dict=state)
    tokenizer.save_pretrained(dest)
    parts = [("", "Transformer"), ("1_Pooling", "Pooling")]
    if normalize:
        parts.append(("2_Normalize", "Normalize"))
        (dest / "2_Normalize").mkdir(exist_ok=True)
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(parts)
    ]
    (dest / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (dest / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_len, "do_lower_case": False}, indent=2) + "\n"
    )
    (dest / "1_Pooling").mkdir(exist_ok=True)
    pooling_cfg = {
        "word_embedding_dimension": int(tower.config.hidden_size),
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2) + "\n")
