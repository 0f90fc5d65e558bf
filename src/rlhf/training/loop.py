"""The supervised training loop shared by SFT and the reward model (and later DPO).

It is one readable loop: per epoch a fixed batch order, gradient accumulation, clipping, a
warmup+cosine schedule, periodic logging, validation and checkpoints, and resume from the
newest checkpoint (which the stage has checked is this run's). What differs between stages is
only ``loss_fn`` (a batch -> loss and metrics) and ``evaluate`` (-> validation metrics).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.config import TrainConfig
from rlhf.console.progress import Progress
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training.errors import NonFiniteLossError
from rlhf.training.schedule import warmup_cosine

log = logging.getLogger("rlhf.train")

Batch = Any
LossFn = Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[], dict[str, float]]


@dataclass
class LoopResult:
    steps: int
    resumed_from: int | None  # step of the checkpoint the run resumed from, if any
    initial_metrics: dict[str, float]  # validation before the first step
    final_metrics: dict[str, float]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (not on biases, norms or gains)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def train(
    model: torch.nn.Module,
    batches_for_epoch: Callable[[int], list[Batch]],
    loss_fn: LossFn,
    evaluate: EvalFn,
    cfg: TrainConfig,
    checkpoint_root: str | Path,
    tracker: Tracker,
    stage: str,
    fingerprint: dict[str, Any],
    resume_path: Path | None,
) -> LoopResult:
    """Train ``model`` in place; return the step count and the final validation metrics.

    ``batches_for_epoch(e)`` must return the same batches for the same ``e`` every time: that
    is what lets a resumed run skip exactly the micro-batches it had already used.
    ``resume_path`` is the checkpoint to continue, as ``checkpoint.resume_checkpoint`` found
    and checked it against this run's ``fingerprint``, which every new checkpoint records."""
    per_epoch = math.ceil(len(batches_for_epoch(0)) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
    warmup = int(cfg.warmup_ratio * total)

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, warmup, cfg.min_lr_ratio)
    )
    position = _Position()
    # What a checkpoint holds: one list for saving and for resuming.
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "position": position}
    resumed_from = None
    if resume_path is not None:
        resumed_from = ckpt.resume_parts(resume_path, parts, stage, tracker)
        initial = position.initial_metrics
    else:
        initial = position.initial_metrics = _validate(model, evaluate)
        tracker.log_metrics(initial, step=0)
    step, epoch, micro = position.step, position.epoch, position.micro

    def save() -> Path:
        position.step, position.epoch, position.micro = step, epoch, micro
        return ckpt.save_parts(checkpoint_root, step, parts, cfg.keep_checkpoints, fingerprint)

    model.train()
    started = time.time()
    window: dict[str, list[float]] = {}
    with Progress(f"{stage} training", total, "step", step) as progress:
        while step < total:
            batches = batches_for_epoch(epoch)
            while micro < len(batches) and step < total:
                group = batches[micro : micro + cfg.grad_accum]
                for batch in group:
                    loss, metrics = loss_fn(batch)
                    if not torch.isfinite(loss):
                        last = ckpt.latest_checkpoint(checkpoint_root)
                        raise NonFiniteLossError(
                            f"{stage}: loss is {loss.item()} at step {step} (epoch {epoch}); "
                            f"stopping. Last good checkpoint: {last or 'none yet'}"
                        )
                    (loss / len(group)).backward()
                    for k, v in {"loss": loss.item(), **metrics}.items():
                        window.setdefault(k, []).append(v)
                if cfg.max_grad_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    window.setdefault("grad_norm", []).append(float(norm))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                micro += len(group)
                step += 1
                progress.update(1, loss=sum(window["loss"]) / len(window["loss"]))

                if step % cfg.log_every == 0 or step == total:
                    logged = {f"train/{k}": sum(v) / len(v) for k, v in window.items()}
                    logged["train/lr"] = scheduler.get_last_lr()[0]
                    logged["train/epoch"] = epoch + micro / max(1, len(batches))
                    tracker.log_metrics(logged, step=step)
                    log.debug(
                        "%s step %d/%d loss %.4f (%.1fs)",
                        stage,
                        step,
                        total,
                        logged["train/loss"],
                        time.time() - started,
                    )
                    window = {}
                if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step < total:
                    tracker.log_metrics(_validate(model, evaluate), step=step)
                if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < total:
                    save()
            if micro >= len(batches):
                epoch, micro = epoch + 1, 0

    final = _validate(model, evaluate)
    tracker.log_metrics(final, step=step)
    return LoopResult(step, resumed_from, initial, final)


@dataclass
class _Position(ckpt.FieldsState):
    """Where the loop is: optimizer steps taken, the epoch and the micro-batch in it, and the
    validation metrics before the first step (reported at the end, resumed or not)."""

    step: int = 0
    epoch: int = 0
    micro: int = 0
    initial_metrics: dict[str, float] = field(default_factory=dict)


def _validate(model: torch.nn.Module, evaluate: EvalFn) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = evaluate()
    model.train()
    return metrics
