"""FLOPs per item from model configs and token counts: the 2 x params x tokens rule.

A transformer's forward pass costs about 2 FLOPs per parameter per token (one multiply-add per
weight; Kaplan et al., 2020, §2.1), counting the parameters outside the embedding tables, whose
lookups cost nothing; a training step costs 3x its forward pass (the backward pass is twice the
forward). The attention's sequence-squared term is left out: at 128-256 tokens it adds under 10%
to a MiniLM or BERT-base layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raykd.config import ConfigError

# Public configs (architecture only) of models a plan is often made for on a machine that cannot
# reach the Hugging Face hub; any other id or folder is read with AutoConfig.
_MINILM_L6 = {"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536}
KNOWN_CONFIGS: dict[str, dict[str, int]] = {
    "bert-base-uncased": {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072},
    "bert-large-uncased": {
        "num_hidden_layers": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
    },
    "cross-encoder/ms-marco-MiniLM-L-6-v2": _MINILM_L6,
    "cross-encoder/ms-marco-MiniLM-L-12-v2": {**_MINILM_L6, "num_hidden_layers": 12},
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM_L6,
}


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP rule needs from a model."""

    ref: str
    params: int  # outside the embedding tables: what each token multiplies through
    total_params: int  # everything a checkpoint holds
    hidden: int  # the embedding dimension a dense index stores

    def forward_flops(self, tokens: float) -> float:
        return 2.0 * self.params * tokens


def model_shape(ref: str, key: str) -> ModelShape:
    """The shape of model ``ref`` (config key ``key`` in errors), built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModel, BertConfig

    from raykd.models import resolve_model

    if ref in KNOWN_CONFIGS and not Path(ref).is_dir():
        config = BertConfig(**KNOWN_CONFIGS[ref])
    else:
        try:
            config = AutoConfig.from_pretrained(resolve_model(ref))
        except (OSError, ValueError) as err:
            known = ", ".join(KNOWN_CONFIGS)
            raise ConfigError(
                f"{key}: cannot read the config of {ref!r} ({str(err).splitlines()[0]}); "
                f"give a local folder, or one of: {known}"
            ) from None
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    params = total = 0
    for name, p in model.named_parameters():
        total += p.numel()
        params += 0 if "embeddings" in name else p.numel()
    return ModelShape(ref, params, total, int(config.hidden_size))


@dataclass(frozen=True)
class TextLengths:
    """Token counts (no special tokens) of sampled queries and passages; a single value when
    given by hand, ``inf`` when unknown (every text then fills its max length)."""

    query: np.ndarray
    passage: np.ndarray
    source: str

    @classmethod
    def fixed(cls, query: float | None, passage: float | None) -> TextLengths:
        given = query is not None or passage is not None
        q = np.array([np.inf if query is None else query], dtype=np.float64)
        p = np.array([np.inf if passage is None else passage], dtype=np.float64)
        return cls(q, p, "given" if given else "max lengths (no sample)")

    def single(self, side: str, max_length: int) -> float:
        """Mean tokens of one text encoded alone: [CLS] text [SEP], truncated to max_length."""
        lengths = self.query if side == "query" else self.passage
        return float(np.minimum(lengths + 2, max_length).mean())

    def untruncated(self, side: str, max_length: int) -> float:
        """Mean tokens of one text before truncation (what a tokenizer works through); the max
        length when the lengths are unknown."""
        lengths = self.query if side == "query" else self.passage
        return float(np.where(np.isinf(lengths), max_length, lengths + 2).mean())

    def pair(self, max_query: int | None, max_passage: int) -> float:
        """Mean tokens of a cross-encoder's [CLS] q [SEP] p [SEP] (raykd.teacher.tokenize)."""
        if max_query is None:  # truncated jointly to the budget: the i-th query with the i-th
            k = max(len(self.query), len(self.passage))  # passage, the shorter side repeated
            joint = np.resize(self.query, k) + np.resize(self.passage, k) + 3
            return float(np.minimum(joint, max_passage).mean())
        q = np.minimum(self.query, max_query).mean()
        return float(q + np.minimum(self.passage, max_passage).mean() + 3)


def sample_lengths(tokenizer_ref: str, queries: list[str], passages: list[str]) -> TextLengths:
    """Token counts of sampled texts with the tokenizer of ``tokenizer_ref``."""
    from raykd.mining.dark_examples import load_tokenizer

    tok = load_tokenizer(tokenizer_ref)

    def count(texts: list[str]) -> np.ndarray:
        # verbose=False: no warning for texts over the model's length; they are counted whole.
        ids = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.float64)

    n = f"{len(queries):,} queries, {len(passages):,} passages"
    return TextLengths(count(queries), count(passages), f"sampled ({n})")


def item_flops(ref: str, passages: list[str], max_length: int, queries: list[str] | None = None):
    """Mean forward FLOPs per item of a bench's texts with model ``ref``: each passage encoded
    alone, or with ``queries`` each (query, passage) pair truncated jointly to ``max_length``."""
    lengths = sample_lengths(ref, queries or [""], passages)
    if queries:
        tokens = lengths.pair(None, max_length)
    else:
        tokens = lengths.single("passage", max_length)
    return model_shape(ref, "model").forward_flops(tokens)
