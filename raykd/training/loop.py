"""The per-worker training loop: plain PyTorch + DeepSpeed, run by Ray Train's TorchTrainer.

One loop serves the student (``raykd.student.task``: dual encoder, distillation losses) and the
teacher-train stage (``raykd.teacher.finetune``: cross-encoder, listwise cross-entropy): a *task*
(``Task``, built by a factory named in the loop config) supplies the model, the collate function,
the loss and the export; the loop owns the DeepSpeed engine, the schedule, reporting, checkpoints
and resume.

Checkpoints: every worker calls ``engine.save_checkpoint`` into a local folder and reports it;
Ray merges the workers' files into one checkpoint folder. ``client_state`` carries the progress
(epochs done, micro-batches done in the current epoch, step, samples), so a relaunch or a restart
after a worker failure continues where the last checkpoint left off instead of redoing epochs.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from raykd.config import JobConfig, TrainerSection
from raykd.console import to_driver
from raykd.tracking import PER_STEP
from raykd.training.deepspeed_config import deepspeed_config
from raykd.training.meter import Meter

DS_TAG = "state"


@dataclass
class Task:
    """The model-specific parts of a training run."""

    model: nn.Module
    collate: Callable[[dict], dict[str, torch.Tensor]]
    # (model outputs, batch, 1-based epoch) -> (loss, scalar metrics of this micro-batch)
    loss: Callable[[dict, dict, int], tuple[torch.Tensor, dict[str, float]]]
    # (module, full fp32 state dict, local destination folder) -> None
    export: Callable[[nn.Module, dict[str, torch.Tensor], str], None]
    # (module) -> metrics added to the epoch's report (e.g. a dev metric for Tune's ASHA);
    # called on every rank, so a ZeRO-3 forward stays collective
    on_epoch_end: Callable[[nn.Module], dict[str, float]] | None = None
    # (this worker's micro-batches of one optimizer step, 1-based epoch) -> None: annotates the
    # batches with what needs the whole global batch; collective, called on every rank
    on_step: Callable[[list[dict], int], None] | None = None


def make_task(ref: str, job: JobConfig, model_dir: str) -> Task:
    """Build the Task named by ``ref`` ("module:function", called with the job and model folder)."""
    module, fn = ref.split(":")
    return getattr(importlib.import_module(module), fn)(job, model_dir)


def trainer_section(job: JobConfig, path: str) -> TrainerSection:
    """The section at ``path`` ("train" or "teacher.train") of ``job``."""
    node = job
    for part in path.split("."):
        node = getattr(node, part)
    if not isinstance(node, TrainerSection):
        raise ValueError(f"{path} is not a trainer section")
    return node


def loop_config(
    task: str,
    job: JobConfig,
    section: str,
    *,
    model_dir: str,
    steps_per_epoch: int,
    export_uri: str,
) -> dict[str, Any]:
    """The ``train_loop_config`` of the TorchTrainer (plain, picklable values)."""
    return {
        "task": task,
        "job": job.model_dump(mode="json"),
        "section": section,
        "model_dir": model_dir,
        "steps_per_epoch": steps_per_epoch,
        "export_uri": export_uri,
    }


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Train, checkpoint, export; returns the run summary (rank 0's is ``Result.return_value``)."""
    import ray.train
    from transformers import get_linear_schedule_with_warmup

    deepspeed = _import_deepspeed()

    job = JobConfig.model_validate(config["job"])
    params = trainer_section(job, config["section"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if params.torch_threads:
        torch.set_num_threads(params.torch_threads)
    torch.manual_seed(params.seed)
    task = make_task(config["task"], job, config["model_dir"])
    if params.grad_checkpointing:
        task.model.gradient_checkpointing_enable()

    micro_per_epoch = config["steps_per_epoch"] * params.grad_accum
    total_steps = config["steps_per_epoch"] * params.epochs
    device = ray.train.torch.get_device() if params.use_gpu else torch.device("cpu")
    opt = torch.optim.AdamW(
        task.model.parameters(),
        lr=params.lr,
        weight_decay=params.weight_decay,
        fused=device.type == "cuda",
    )
    sched = get_linear_schedule_with_warmup(opt, params.warmup_steps, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=task.model,
        optimizer=opt,
        lr_scheduler=sched,
        config=deepspeed_config(params, world_size=world),
    )

    state = {
        "epochs_done": 0,
        "micro_in_epoch": 0,
        "samples": 0,
        "kept": 0,
        "batch": 0,
        "first_loss": None,
    }
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            _, client = engine.load_checkpoint(d, tag=DS_TAG)
        state.update(client["progress"])
        if rank == 0:
            to_driver(f"resumed at step {engine.global_steps} ({state})")
    start_step = engine.global_steps

    shard = ray.train.get_dataset_shard("train")
    meter = Meter()
    # from_pretrained leaves the model in eval mode: dropout is part of fine-tuning.
    engine.train()
    for epoch in range(state["epochs_done"] + 1, params.epochs + 1):
        skip = state["micro_in_epoch"]
        shuffle = (
            {
                "local_shuffle_buffer_size": params.shuffle_buffer,
                "local_shuffle_seed": params.seed * 1_000_003 + epoch,
            }
            if params.shuffle_buffer
            else {}
        )
        batches = shard.iter_torch_batches(
            batch_size=params.micro_batch,
            collate_fn=_ray_collate(task.collate),
            drop_last=True,
            device=device,
            prefetch_batches=2,
            **shuffle,
        )
        for step_batches in _steps(batches, params.grad_accum, micro_per_epoch, skip):
            lr = sched.get_last_lr()[0]  # the rate this step runs at
            if task.on_step is not None:
                task.on_step([b for _, b in step_batches], epoch)
            for i, batch in step_batches:
                # Dropout draws from the global generator, which other threads of the worker
                # also use: seeding each micro-batch keeps its masks a function of (seed, epoch,
                # i) alone.
                torch.manual_seed(hash((params.seed, rank, epoch, i)))
                out = engine(batch)
                loss, metrics = task.loss(out, batch, epoch)
                engine.backward(loss)
                engine.step()
                b = int(batch["cand_mask"].shape[0])
                state["micro_in_epoch"] = i + 1
                state["samples"] += b * world
                state["kept"] += metrics.get("kept", b)
                state["batch"] += b
                meter.add(loss.item(), metrics, b * world)
            step = engine.global_steps
            meter.end_step(step, epoch, lr)
            if step_batches[-1][0] + 1 == micro_per_epoch:  # the epoch-end report checkpoints it
                continue
            if params.checkpoint_every_steps and step % params.checkpoint_every_steps == 0:
                _report(
                    engine, meter.flush(), meter, state, epoch, step, sched, rank, checkpoint=True
                )
            elif step % params.report_every == 0:
                _report(
                    engine, meter.flush(), meter, state, epoch, step, sched, rank, checkpoint=False
                )
        state["epochs_done"], state["micro_in_epoch"] = epoch, 0
        epoch_metrics = meter.flush()
        if task.on_epoch_end is not None:
            epoch_metrics.update(task.on_epoch_end(engine.module))
        step = engine.global_steps
        _report(engine, epoch_metrics, meter, state, epoch, step, sched, rank, checkpoint=True)

    _export(engine, task, params, rank, config["export_uri"])
    summary = {
        "step": engine.global_steps,
        "start_step": start_step,
        "samples": state["samples"],
        "kept_total": round(state["kept"] * world),
        "batch_total": state["batch"] * world,
        "samples_per_s": meter.run_rate(),
        "loss": meter.last_loss,
        "first_loss": state["first_loss"],
    }
    return summary


def _import_deepspeed():
    """DeepSpeed, imported with MLflow hidden: where MLflow is installed, DeepSpeed's autotuner
    (which raykd never runs) imports it at import time, 2.3 s of every training worker's start.
    raykd's own MLflow tracking runs in Ray Train's controller, another process."""
    hide = "mlflow" not in sys.modules
    if hide:
        sys.modules["mlflow"] = None  # makes `import mlflow` raise ImportError
    try:
        import deepspeed
    finally:
        if hide:
            del sys.modules["mlflow"]
    return deepspeed


def _ray_collate(fn: Callable[[dict], dict]):
    """The task's collator as Ray Data takes it: an instance of a collate class (a plain
    callable is deprecated). Batches arrive as dicts of numpy arrays."""
    from ray.data.collate_fn import NumpyBatchCollateFn

    class Collate(NumpyBatchCollateFn):
        def __call__(self, batch):
            return fn(batch)

    return Collate()


def _steps(batches, grad_accum: int, limit: int, skip: int):
    """(index, micro-batch) lists of one optimizer step each, up to micro-batch ``limit``.

    The first ``skip`` micro-batches (consumed before the checkpoint a run resumed from, which
    is always at a step boundary) are read and dropped. A step is handed over whole, so work
    that needs the global batch (ADAM's self-paced ranking) sees all of it before the first
    forward pass.
    """
    step: list[tuple[int, dict]] = []
    for i, batch in enumerate(batches):
        if i >= limit:
            break
        if i < skip:
            continue
        step.append((i, batch))
        if len(step) == grad_accum:
            yield step
            step = []


def _report(engine, metrics, meter: Meter, state, epoch, step, sched, rank, *, checkpoint) -> None:
    """Report a window's ``metrics`` (rank 0 also prints them) with the meter's per-step records
    of the window; with ``checkpoint``, the engine's state too."""
    import ray.train

    if state["first_loss"] is None and "loss" in metrics:
        state["first_loss"] = metrics["loss"]

    metrics = {**metrics, "epoch": epoch, "step": step, "lr": sched.get_last_lr()[0]}
    if rank == 0:
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        to_driver(shown)
    metrics[PER_STEP] = meter.take_steps()
    if not checkpoint:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="raykd-ckpt-")
    try:
        engine.save_checkpoint(tmp, tag=DS_TAG, client_state={"progress": dict(state)})
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_{step:08d}",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(engine, task: Task, params: TrainerSection, rank: int, export_uri: str) -> None:
    """Consolidate the weights on rank 0 and write the task's export to ``export_uri``."""
    import pyarrow.fs as pafs
    import torch.distributed as dist

    from raykd.data.files import filesystem

    if params.zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # collective: every rank
    else:
        state = engine.module.state_dict() if rank == 0 else None
    if rank == 0:
        tmp = tempfile.mkdtemp(prefix="raykd-export-")
        try:
            task.export(engine.module, {k: v.float() for k, v in state.items()}, tmp)
            fs, path = filesystem(export_uri)
            fs.create_dir(path, recursive=True)
            pafs.copy_files(tmp, path, destination_filesystem=fs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
