"""Cross-encoder fine-tuning pieces for the teacher-train stage: the model, the loss, the export
(a ``Task`` for ``raykd.training.loop``), and the training rows built from the pool.

Listwise cross-entropy: for each training query the positive and ``n_negatives`` pool negatives
are scored as one list, and the loss is -log softmax(logits)[positive].
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from raykd.config import JobConfig
from raykd.errors import InputError
from raykd.student.batching import PairCollator
from raykd.student.losses import info_nce
from raykd.training.loop import Task


class CrossEncoderScorer(nn.Module):
    """An ``AutoModelForSequenceClassification`` (1 logit) scoring [B x K] pairs as [B, K]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b, k = batch["cand_mask"].shape
        inputs = {key[len("pair_") :]: v for key, v in batch.items() if key.startswith("pair_")}
        return {"scores": self.model(**inputs).logits.view(b, k)}


def teacher_task(job: JobConfig, model_dir: str) -> Task:
    """The cross-encoder fine-tuning task: listwise cross-entropy (InfoNCE) of the positive
    against ``teacher.train.n_negatives`` pool negatives per query.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    collate = PairCollator(model_dir, job.teacher.max_query_length, job.teacher.max_passage_length)

    def loss(out: dict, batch: dict, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        scores = out["scores"]
        acc = (scores[:, :1] > scores[:, 1:]).float().mean().item()
        return info_nce(scores, mask=batch["cand_mask"]), {"pair_acc": acc}

    def export(module: nn.Module, state: dict[str, torch.Tensor], dest: str) -> None:
        inner = {k.removeprefix("model."): v for k, v in state.items()}
        module.model.save_pretrained(dest, state_dict=inner)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(dest)

    return Task(model=CrossEncoderScorer(model), collate=collate, loss=loss, export=export)


def training_rows(
    pool: pa.Table,
    qrels: pa.Table,
    queries: pa.Table,
    corpus: pa.Table,
    *,
    n_negatives: int,
    seed: int,
    pool_path: str,
) -> pa.Table:
    """One row per training query with a positive: ``qid``, ``query``, ``pos``, ``cands``.

    Negatives are drawn (seeded) from the query's pool minus its judged-relevant passages; a
    query with fewer than ``n_negatives`` of them reuses some (every list must be equally long).
    """
    rng = random.Random(seed)
    rel = qrels.filter(pc.greater(qrels["rel"], 0))
    positives: dict[str, list[str]] = {}
    for qid, pid in zip(rel["qid"].to_pylist(), rel["pid"].to_pylist(), strict=True):
        positives.setdefault(qid, []).append(pid)
    negatives: dict[str, list[str]] = {}
    for qid, pid in zip(pool["qid"].to_pylist(), pool["pid"].to_pylist(), strict=True):
        if qid in positives and pid not in positives[qid]:
            negatives.setdefault(qid, []).append(pid)
    qtext = dict(zip(queries["qid"].to_pylist(), queries["text"].to_pylist(), strict=True))
    chosen: dict[str, tuple[str, list[str]]] = {}
    for qid in sorted(positives):
        negs = sorted(set(negatives.get(qid, [])))
        if qid not in qtext:
            continue
        if not negs:
            raise InputError(pool_path, f"query {qid!r} has no negative in the pool")
        picked = (
            rng.sample(negs, n_negatives)
            if len(negs) >= n_negatives
            else [rng.choice(negs) for _ in range(n_negatives)]
        )
        chosen[qid] = (rng.choice(sorted(positives[qid])), picked)
    needed = {p for pos, negs in chosen.values() for p in [pos, *negs]}
    sub = corpus.filter(pc.is_in(corpus["pid"], pa.array(sorted(needed), pa.string())))
    text = dict(zip(sub["pid"].to_pylist(), sub["text"].to_pylist(), strict=True))
    qids = list(chosen)
    return pa.table(
        {
            "qid": qids,
            "query": [qtext[q] for q in qids],
            "pos": [text[chosen[q][0]] for q in qids],
            "cands": [[text[p] for p in chosen[q][1]] for q in qids],
        }
    )


def pair_accuracy(model_dir: str, rows: pa.Table, *, max_length: int, batch_size: int = 64):
    """Fraction of (positive, negative) pairs of ``rows`` the cross-encoder orders correctly."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    correct = total = 0
    d = rows.to_pydict()
    for q, pos, cands in zip(d["query"], d["pos"], d["cands"], strict=True):
        texts = [pos, *cands]
        with torch.inference_mode():
            enc = tok(
                [q] * len(texts),
                texts,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            s = model(**enc).logits.view(-1).numpy()
        correct += int(np.sum(s[0] > s[1:]))
        total += len(cands)
    return correct / max(1, total)
