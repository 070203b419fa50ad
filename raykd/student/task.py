"""The student's training task: the dual encoder, its collate function, its loss (KD + lambda *
sup, ADAM Eq. 9, composed by ``raykd.student.losses.compose``) and its export."""

from __future__ import annotations

import torch
from torch import nn

from raykd.config import JobConfig
from raykd.student.batching import StudentCollator
from raykd.student.losses import LOSSES, adam_loss, compose, in_batch_info_nce, info_nce
from raykd.student.selfpaced import annotate_self_paced
from raykd.training.loop import Task


def student_task(job: JobConfig, model_dir: str) -> Task:
    """The dual-encoder student with the loss chosen by ``candidates.strategy`` and ``train``."""
    from transformers import AutoTokenizer

    from raykd.student.model import DualEncoder

    st, tr = job.student, job.train
    model = DualEncoder.from_pretrained(
        model_dir,
        pooling=st.pooling,
        normalize=st.normalize,
        shared_towers=st.shared_towers,
        scale=st.scale,
    )
    collate = StudentCollator(model_dir, st.max_query_length, st.max_passage_length)
    dark = job.candidates.strategy == "dark"

    def loss(out: dict, batch: dict, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        scores, mask = out["scores"], batch["cand_mask"]
        if dark:
            r = adam_loss(
                scores,
                batch["teacher"],
                batch["keep"],
                lambda_sup=tr.lambda_sup,
                mask=mask,
                sup_mask=batch["sup_mask"],
                kd_denominator=batch["kd_denominator"],
                sup_temperature=tr.sup_temperature,
                student_temperature=tr.loss.student_temperature,
                teacher_temperature=tr.loss.teacher_temperature,
            )
            # This micro-batch's share of the global batch's kept rows (r.kept varies by worker).
            kd, sup, kept = r.kd, r.sup, float(batch["kd_denominator"])
        else:
            # The loss's settings besides its name are its keyword arguments (kl: temperatures).
            kw = tr.loss.model_dump(exclude={"name"})
            kd = LOSSES[tr.loss.name](scores, batch["teacher"], mask=mask, **kw)
            if tr.in_batch_negatives:
                idx = batch["cand_index"]
                sup = in_batch_info_nce(
                    st.scale * out["q"],
                    out["p"][idx[:, 0]],
                    out["p"][idx[:, 1:]],
                    temperature=tr.sup_temperature,
                    c_mask=mask[:, 1:],
                )
            else:
                sup = info_nce(scores, temperature=tr.sup_temperature, mask=mask)
            kept = float(scores.shape[0])
        metrics = {"sup": sup.item(), "kd": kd.item(), "kept": kept, "batch": float(len(scores))}
        return compose(tr.objective, kd, sup, tr.lambda_sup), metrics

    def export(module: nn.Module, state: dict[str, torch.Tensor], dest: str) -> None:
        module.save(
            dest,
            AutoTokenizer.from_pretrained(model_dir),
            max_query_length=st.max_query_length,
            max_passage_length=st.max_passage_length,
            state_dict=state,
        )

    on_step = None
    if dark:

        def on_step(batches: list[dict], epoch: int) -> None:
            annotate_self_paced(batches, epoch, tr.epochs)

    return Task(model=model, collate=collate, loss=loss, export=export, on_step=on_step)
