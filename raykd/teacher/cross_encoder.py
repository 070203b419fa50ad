"""The cross-encoder teacher: a Ray Data callable class around a sequence-classification model."""

from __future__ import annotations

from typing import Any

import numpy as np

from raykd.config import ActorPoolSpec
from raykd.models import autocast_dtype
from raykd.teacher.base import ScorerSpec, TeacherEnv, register_teacher
from raykd.teacher.tokenize import load_tokenizer, pad, tokenize_batch


def head_scores(logits: np.ndarray) -> np.ndarray:
    """Raw teacher score: the single logit, or logit[1] - logit[0] for a 2-class head."""
    if logits.ndim != 2 or logits.shape[1] not in (1, 2):
        raise ValueError(f"cross-encoder head must have 1 or 2 logits, got shape {logits.shape}")
    if logits.shape[1] == 1:
        return logits[:, 0].astype(np.float32)
    return (logits[:, 1] - logits[:, 0]).astype(np.float32)


class CrossEncoderScorer:
    """Loads the model once per actor; scores pre-tokenised, length-sorted batches."""

    def __init__(
        self, model: str, pad_id: int, dtype: str = "fp32", torch_threads: int | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForSequenceClassification.from_pretrained(model).to(self.device)
        self.model.eval()
        n_labels = self.model.config.num_labels
        if n_labels not in (1, 2):
            raise ValueError(f"{model}: cross-encoder head has {n_labels} labels, need 1 or 2")
        self.pad_id = pad_id
        self.amp_dtype = autocast_dtype(self.device.type, dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        ids, mask = pad(batch["input_ids"], self.pad_id)
        inputs = {
            "input_ids": torch.from_numpy(ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        if "token_type_ids" in batch:
            types, _ = pad(batch["token_type_ids"], 0)
            inputs["token_type_ids"] = torch.from_numpy(types).to(self.device)
        with torch.inference_mode():
            amp = self.amp_dtype
            with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
                logits = self.model(**inputs).logits
        scores = head_scores(logits.float().cpu().numpy())
        return {"qid": batch["qid"], "eid": batch["eid"], "kind": batch["kind"], "score": scores}


def cross_encoder_spec(
    model: str,
    actors: ActorPoolSpec,
    *,
    max_query_length: int | None,
    max_passage_length: int,
    bucket_rows: int = 2048,
    name: str = "cross_encoder",
) -> ScorerSpec:
    """The scoring job for a local model dir: tokenise in CPU tasks, score in an actor pool.

    Pairs are tokenised as (query, passage) with ``max_query_length`` query tokens (None: the
    pair truncated jointly, longest first) and ``max_passage_length`` tokens in all; rows are
    sorted by length within windows of ``bucket_rows``.
    """
    tokenizer = load_tokenizer(model)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{model}: tokenizer has no pad token")
    actor_kwargs: dict[str, Any] = {
        "model": model,
        "pad_id": int(tokenizer.pad_token_id),
        "dtype": actors.dtype,
        "torch_threads": actors.torch_threads,
    }
    return ScorerSpec(
        name=name,
        actor_cls=CrossEncoderScorer,
        actors=actors,
        actor_kwargs=actor_kwargs,
        # A CPU actor reserves the threads it uses, so Ray packs no more actors than cores (the
        # pre-stage's output is materialised first, so no read waits for a core).
        num_cpus=None if actors.num_gpus else float(actors.torch_threads or 1),
        prestage=tokenize_batch,
        prestage_kwargs={
            "tokenizer": model,
            "max_query_length": max_query_length,
            "max_passage_length": max_passage_length,
        },
        prestage_batch_size=bucket_rows,
    )


@register_teacher("cross_encoder")
def build_cross_encoder(cfg: Any, env: TeacherEnv) -> ScorerSpec:
    """The cross-encoder scorer of ``cfg.model``, with the teacher section's batch size and
    lengths.
    """
    t = env.job.teacher  # run-time knobs live on the section, also for ensemble members
    return cross_encoder_spec(
        env.model_ref(cfg.model),
        t.actors,
        max_query_length=t.max_query_length,
        max_passage_length=t.max_passage_length,
        bucket_rows=t.bucket_rows,
    )
