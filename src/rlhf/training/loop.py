"""The supervised training loop shared by SFT, the reward model and DPO.

It is one readable loop: per epoch a fixed batch order, gradient accumulation, clipping, a
warmup+cosine schedule, periodic logging, validation and checkpoints, and resume from the
newest checkpoint (which the stage has checked is this run's). What differs between stages is
only ``loss_fn`` (a batch -> loss and metrics) and ``evaluate`` (-> validation metrics).

It steps through an :class:`~rlhf.training.engine.Engine` (plain PyTorch or DeepSpeed). With
several ranks each micro-batch is split between them (``distributed.shard``), so N ranks take
the same optimizer steps on the same global batches, in the same order, as one process.
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
from rlhf.training import distributed
from rlhf.training.engine import Engine
from rlhf.training.errors import NonFiniteLossError
from rlhf.training.schedule import warmup_cosine

log = logging.getLogger("rlhf.train")

Batch = Any
LossFn = Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[], dict[str, float]]
WeightFn = Callable[[Batch], float]


@dataclass
class LoopResult:
    steps: int
    resumed_from: int | None  # step of the checkpoint the run resumed from, if any
    initial_metrics: dict[str, float]  # validation before the first step
    final_metrics: dict[str, float]


def train(
    engine: Engine,
    batches_for_epoch: Callable[[int], list[Batch]],
    loss_fn: LossFn,
    evaluate: EvalFn,
    cfg: TrainConfig,
    checkpoint_root: str | Path,
    tracker: Tracker,
    stage: str,
    fingerprint: dict[str, Any],
    resume_path: Path | None,
    batch_weight: WeightFn = len,
) -> LoopResult:
    """Train ``engine``'s model in place; return the step count and the final validation
    metrics (``evaluate`` runs on every rank: under ZeRO-3 each forward pass needs them all).

    ``batches_for_epoch(e)`` must return the same batches for the same ``e`` every time: that
    is what lets a resumed run skip exactly the micro-batches it had already used.
    ``resume_path`` is the checkpoint to continue, as ``checkpoint.resume_checkpoint`` found
    and checked it against this run's ``fingerprint``, which every new checkpoint records.
    ``batch_weight(batch)`` is how many units ``loss_fn``'s mean is over (pairs, or SFT's
    response tokens): with several ranks each rank's loss is weighted by its share of them,
    so that the gradient is the one of the whole batch's mean."""
    per_epoch = math.ceil(len(batches_for_epoch(0)) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
    warmup = int(cfg.warmup_ratio * total)

    def lr_at(s: int) -> float:
        return cfg.lr * warmup_cosine(s, total, warmup, cfg.min_lr_ratio)

    world = distributed.launched_world()
    position = _Position()
    # What a checkpoint holds: one list for saving and for resuming.
    parts = {"model": engine, "position": position}
    resumed_from = None
    if resume_path is not None:
        resumed_from = ckpt.resume_parts(resume_path, parts, stage, tracker)
        initial = position.initial_metrics
    else:
        initial = position.initial_metrics = _validate(engine, evaluate)
        tracker.log_metrics(initial, step=0)
    step, epoch, micro = position.step, position.epoch, position.micro

    def save() -> Path:
        position.step, position.epoch, position.micro = step, epoch, micro
        return ckpt.save_parts(checkpoint_root, step, parts, cfg.keep_checkpoints, fingerprint)

    engine.train()
    started = time.time()
    window: dict[str, list[float]] = {}
    with Progress(f"{stage} training", total, "step", step) as progress:
        while step < total:
            batches = batches_for_epoch(epoch)
            while micro < len(batches) and step < total:
                group = batches[micro : micro + cfg.grad_accum]
                engine.set_lr(lr_at(step))
                for batch in group:
                    # This rank's share; a rank left without one (a batch smaller than the
                    # world) still runs a zero-weighted pass so that every rank syncs.
                    part = distributed.shard(batch, world)
                    with engine.autocast():
                        loss, metrics = loss_fn(part or batch[:1])
                    # One all-reduce: the batch's units (tokens, pairs) over all ranks, and
                    # whether any rank's loss is not finite.
                    weight = batch_weight(part) if part else 0.0
                    units, bad = distributed.sums_across_ranks(
                        [weight, 0.0 if torch.isfinite(loss).item() else 1.0]
                    )
                    if bad:
                        last = ckpt.latest_checkpoint(checkpoint_root)
                        raise NonFiniteLossError(
                            f"{stage}: loss is {loss.item()} at step {step} (epoch {epoch})"
                            f"{world.on_rank()}; stopping. "
                            f"Last good checkpoint: {last or 'none yet'}"
                        )
                    # This rank's part of the global mean once the engine averages the ranks'
                    # gradients (1.0 alone); 0 for a rank left without a share.
                    share = world.size * weight / units if units > 0 else 0.0
                    engine.backward((loss if share == 1.0 else loss * share) / len(group))
                    for k, v in {"loss": loss.item(), **metrics}.items():
                        window.setdefault(k, []).append(v)
                norm = engine.step()
                if norm is not None:
                    window.setdefault("grad_norm", []).append(norm)
                micro += len(group)
                step += 1
                progress.update(1, loss=sum(window["loss"]) / len(window["loss"]))

                if step % cfg.log_every == 0 or step == total:
                    logged = {f"train/{k}": sum(v) / len(v) for k, v in window.items()}
                    logged = distributed.mean_across_ranks(logged)
                    logged["train/lr"] = lr_at(step)
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
                    tracker.log_metrics(_validate(engine, evaluate), step=step)
                if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < total:
                    save()
            if micro >= len(batches):
                epoch, micro = epoch + 1, 0

    final = _validate(engine, evaluate)
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


def _validate(engine: Engine, evaluate: EvalFn) -> dict[str, float]:
    engine.eval()
    with torch.no_grad(), engine.autocast():
        metrics = evaluate()
    engine.train()
    return metrics
