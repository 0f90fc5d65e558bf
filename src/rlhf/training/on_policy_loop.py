"""The on-policy RL loop: what PPO and GRPO (and any algorithm that samples its own training
data: RLOO, REINFORCE++, online DPO) share around their rollouts and losses.

Each iteration:
  1. learning rates: linear warmup, then constant or linear decay (``lr_schedule``);
  2. prompts: the iteration's batch from the reproducible prompt stream;
  3. ``algorithm.rollout(rows, iteration)`` -> :class:`Experience` (no gradient);
  4. ``algorithm.epochs`` passes over the experience in shuffled minibatches:
     ``algorithm.loss(batch, rows, gradient_step)`` -> each trained model's loss and the
     stats; a non-finite loss stops the run; then each model's engine runs its backward pass
     and steps (clipping each model on its own);
  5. ``algorithm.after_update(stats)``: coefficients that adapt to the iteration (KL control);
  6. guards, history, metrics (with the seconds the rollout, its sampling and the update
     took), sample tables, progress, and a checkpoint every ``checkpoint_every`` iterations.

A checkpoint holds the trained models' engines (weights and optimizer state),
``algorithm.state``, the guards and the loop's position: one list (:func:`_checkpointed`)
both saves and resumes them.

With several ranks (torchrun) each rank rolls out its share of the iteration's prompts and
updates on minibatches of its share of the experience; the engines average the gradients, and
the stats are averaged over the ranks before KL control, guards and logs see them (counts,
``Experience.counts``, are summed). A rollout may give the ranks different numbers of rows
(online DPO's pairs): the ranks then take as many steps as the rank with the most minibatches
needs, and each step's gradient is the mean over the rows all ranks hold in it (see
:func:`_update`).
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

from rlhf.config import OnPolicyConfig
from rlhf.console.progress import Progress
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training import distributed
from rlhf.training.engine import Engine
from rlhf.training.errors import NonFiniteLossError
from rlhf.training.guards import Guards
from rlhf.training.prompt_stream import batch_indices
from rlhf.training.schedule import warmup_then
from rlhf.training.timing import seconds_since

# (prompts, responses, scores) of one iteration, the first ``samples_logged`` shown in tables.
Samples = tuple[list[str], list[str], list[float]]
# A minibatch's loss for each trained model (by name) and its stats, from the algorithm's
# batch, the minibatch's rows (indices into it) and the number of gradient steps taken before
# this one in the whole run.
LossFn = Callable[[Any, torch.Tensor, int], tuple[dict[str, torch.Tensor], dict[str, float]]]


@dataclass
class Trained:
    """A model the loop trains: its engine (model and optimizer) and peak learning rate."""

    name: str  # its name in checkpoints and in the loss function's dict of losses
    engine: Engine
    lr: float


@dataclass
class Experience:
    """What a rollout gives the update: the algorithm's own ``batch`` (read only by its loss
    function), how many rows it has to split into minibatches, the rollout's stats
    (``reward/score_mean``, ``kl/mean``, ``response/length_mean`` at least) and samples.

    ``size`` may differ between ranks. A rank with fewer minibatches than another still steps
    with it, on real rows with its loss weighted 0: its first minibatch again, or row 0 when
    ``size`` is 0, so a batch without rows must still hold a row 0 (any row its loss can
    take)."""

    batch: Any
    size: int
    stats: dict[str, float]
    samples: Samples
    counts: tuple[str, ...] = ()  # stats that count things on this rank: summed over ranks


def _nothing(stats: dict[str, float]) -> None:
    """The default ``after_update``: nothing adapts."""


def _nothing_to_release() -> None:
    """The default ``release``: the rollouts hold nothing of their own."""


@dataclass
class OnPolicyAlgorithm:
    """What an algorithm plugs into :func:`train_on_policy`."""

    name: str  # "ppo": in logs, errors and the progress line
    trained: list[Trained]  # stepped together, in this order, after each minibatch loss
    prompts_per_iteration: int  # prompt rows handed to ``rollout`` each iteration
    epochs: int  # passes over each iteration's experience
    minibatch_size: int  # experience rows per gradient step
    rollout: Callable[[list[int], int], Experience]  # (prompt rows, iteration), under no_grad
    loss: LossFn
    after_update: Callable[[dict[str, float]], None] = _nothing  # may add to the stats
    state: dict[str, ckpt.Stateful] = field(default_factory=dict)  # also checkpointed
    responses_per_prompt: int = 1  # answers sampled per prompt row (GRPO's group size ...)
    # Called once the loop is over, however it ends: frees what only the rollouts use (a vLLM
    # engine's weights and KV cache) before the policy is published.
    release: Callable[[], None] = _nothing_to_release
    # Seconds spent sampling responses since it was last called, when the algorithm samples
    # (the rest of a rollout is scoring): logged as time/sampling_seconds.
    sampling_clock: Callable[[], float] | None = None


@dataclass
class _Position(ckpt.FieldsState):
    """Iterations done, and one row of stats per iteration (the training history)."""

    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def train_on_policy(
    algorithm: OnPolicyAlgorithm,
    config: OnPolicyConfig,
    prompt_count: int,
    device: torch.device,
    tracker: Tracker,
    started: float,
    checkpoint_root: Path,
    fingerprint: dict[str, Any],
    resume_path: Path | None,
) -> list[dict[str, float]]:
    """Run ``config.iterations`` iterations (continuing ``resume_path``, a checkpoint this
    run's ``fingerprint`` matches, when given); return the history, one row per iteration.
    ``prompt_count`` is how many prompts the stream draws from; ``started`` is the stage's
    start time, for the logged durations."""
    world = distributed.launched_world()
    for what, count in (("prompts per iteration", algorithm.prompts_per_iteration),
                        ("minibatch_size", algorithm.minibatch_size)):  # fmt: skip
        if count % world.size:
            raise ValueError(
                f"{algorithm.name}: {what} ({count}) must be a multiple of the number of ranks "
                f"({world.size}): each rank takes an equal share"
            )
    responses = algorithm.prompts_per_iteration * algorithm.responses_per_prompt
    guards = Guards(algorithm.name, config, responses)
    position = _Position()
    parts = _checkpointed(algorithm, guards, position)
    if resume_path is not None:
        ckpt.resume_parts(resume_path, parts, algorithm.name, tracker)

    try:
        with Progress(
            f"{algorithm.name} training", config.iterations, "iteration", position.iteration
        ) as progress:
            for iteration in range(position.iteration, config.iterations):
                factor = warmup_then(
                    iteration, config.iterations, config.warmup_iterations, config.lr_schedule
                )
                for t in algorithm.trained:
                    t.engine.set_lr(t.lr * factor)
                # Batch i is a pure function of (seed, i): a resumed run gets the same prompts.
                rows = batch_indices(
                    prompt_count, algorithm.prompts_per_iteration, config.seed, iteration
                )
                rollout_started = time.perf_counter()
                with torch.no_grad(), algorithm.trained[0].engine.autocast():
                    experience = algorithm.rollout(distributed.shard(rows, world), iteration)
                update_started = time.perf_counter()
                losses = _update(algorithm, experience, iteration, device, checkpoint_root, world)
                timing = {
                    "time/rollout_seconds": update_started - rollout_started,
                    "time/update_seconds": seconds_since(update_started, device),
                }
                if algorithm.sampling_clock is not None:
                    timing["time/sampling_seconds"] = algorithm.sampling_clock()
                stats = distributed.mean_across_ranks(
                    {**experience.stats, **losses, **timing}, experience.counts
                )
                # Logged, but not in the history: a resumed run's history is the unbroken
                # run's, and times never repeat.
                timing = {key: stats.pop(key) for key in timing}
                algorithm.after_update(stats)

                step = iteration + 1
                guards.check(stats, step)
                position.history.append({"step": step, **stats})
                position.iteration = step
                log_iteration(
                    tracker, config, algorithm.name, step, {**stats, **timing}, started,
                    experience.samples,
                )  # fmt: skip
                progress.update(1, score=stats["reward/score_mean"], kl=stats["kl/mean"])
                last_step = step == config.iterations  # the published model supersedes it
                every = config.checkpoint_every
                if every > 0 and step % every == 0 and not last_step:
                    ckpt.save_parts(
                        checkpoint_root, step, parts, config.keep_checkpoints, fingerprint
                    )
    finally:
        algorithm.release()
    return position.history


def _checkpointed(
    algorithm: OnPolicyAlgorithm, guards: Guards, position: _Position
) -> dict[str, ckpt.Part]:
    """What a checkpoint holds, by name: the one list for saving and for resuming."""
    parts: dict[str, ckpt.Part] = {t.name: t.engine for t in algorithm.trained}
    return {**parts, **algorithm.state, "guards": guards, "position": position}


def _update(
    algorithm: OnPolicyAlgorithm,
    experience: Experience,
    iteration: int,
    device: torch.device,
    checkpoint_root: Path,
    world: distributed.World,
) -> dict[str, float]:
    """``algorithm.epochs`` passes over ``experience`` (this rank's share) in shuffled
    minibatches, one gradient step each; returns each loss stat averaged over the steps.

    Ranks whose shares differ in size (``counts`` below) all take the steps of the rank with
    the most minibatches: every rank's backward pass and step join the same collectives (DDP's
    all-reduce, ZeRO's gathers), or the ranks would hang. A rank that has run out of rows runs
    its loss on rows it has (``Experience``) with weight 0, left out of the stats. A rank's
    minibatch loss, a mean over its rows, is weighted by its share of the step's rows across
    ranks (``rows * world / all rows``), so the engines' average of the ranks' gradients is the
    mean over all of them. Equal shares (PPO, GRPO, one process) leave the losses unweighted."""
    for t in algorithm.trained:
        t.engine.train()
    n, size = experience.size, algorithm.minibatch_size // world.size
    counts = distributed.counts_by_rank(n)
    per_epoch = max(math.ceil(c / size) for c in counts)
    even = all(c == n for c in counts)
    sums: dict[str, list[float]] = {}
    for epoch in range(algorithm.epochs):
        order = torch.randperm(n, device=device)
        for k in range(per_epoch):
            start = k * size
            rows = order[start : start + size]
            idle = len(rows) == 0  # only when the shares differ
            if idle:
                rows = order[:size] if n else torch.zeros(1, dtype=torch.long, device=device)
            weight = None
            if not even:
                held = [min(max(c - start, 0), size) for c in counts]
                weight = world.size * held[world.rank] / sum(held)
            gradient_step = (iteration * algorithm.epochs + epoch) * per_epoch + k
            with algorithm.trained[0].engine.autocast():
                losses, stats = algorithm.loss(experience.batch, rows, gradient_step)
            bad = next((v for v in (x.item() for x in losses.values()) if not math.isfinite(v)),
                       None)  # fmt: skip
            if distributed.any_rank(bad is not None):
                terms = ", ".join(f"{s} {v}" for s, v in stats.items() if s.startswith("loss/"))
                last = ckpt.latest_checkpoint(checkpoint_root)
                raise NonFiniteLossError(
                    f"{algorithm.name}: loss is {bad if bad is not None else 'not finite'} "
                    f"at iteration {iteration}"
                    f"{f' ({terms})' if terms else ''}{world.on_rank()}; stopping. "
                    f"Last good checkpoint: {last or 'none yet'}"
                )
            for t in algorithm.trained:  # separate models: separate graphs
                loss = losses[t.name]
                t.engine.backward(loss if weight is None else loss * weight)
            for t in algorithm.trained:  # each clipped on its own
                t.engine.step()
            if not idle:
                for key, value in stats.items():
                    sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}


def log_iteration(
    tracker: Tracker,
    config: OnPolicyConfig,
    stage: str,
    step: int,
    stats: dict[str, float],
    started: float,
    samples: Samples,
) -> None:
    """Metrics every ``log_every`` iterations (and the last), a one-line debug log (the
    progress bar shows the iterations), and a table of (prompt, response, score) samples every
    ``sample_every`` iterations (and the first)."""
    if step % config.log_every == 0 or step == config.iterations:
        tracker.log_metrics(stats, step=step)
        logging.getLogger(f"rlhf.{stage}").debug(
            "%s %d/%d score %.3f kl %.3f len %.1f%s (%.0fs)",
            stage, step, config.iterations, stats["reward/score_mean"], stats["kl/mean"],
            stats["response/length_mean"],
            f" gold {stats['gold/mean']:.3f}" if "gold/mean" in stats else "",
            time.time() - started,
        )  # fmt: skip
    if config.sample_every > 0 and (step % config.sample_every == 0 or step == 1):
        prompts, responses, scores = samples
        k = min(config.samples_logged, len(responses))
        table: dict[str, list[Any]] = {
            "step": [step] * k,
            "prompt": prompts[:k],
            "response": responses[:k],
            "score": [round(float(s), 4) for s in scores[:k]],
        }
        tracker.log_table(table, f"samples/step_{step:05d}.json")


def result_metrics(history: list[dict[str, float]], started: float) -> dict[str, float]:
    """The stage's result: the last iteration's reward, KL and length, with the first
    iteration's reward (and gold reward, when logged) for comparison."""
    last = history[-1] if history else {}
    metrics = {
        "score_mean": last.get("reward/score_mean", math.nan),
        "score_start": history[0]["reward/score_mean"] if history else math.nan,
        "kl_mean": last.get("kl/mean", math.nan),
        "length_mean": last.get("response/length_mean", math.nan),
        "iterations": float(len(history)),
        "seconds": time.time() - started,
    }
    if "gold/mean" in last:
        metrics["gold_mean"] = last["gold/mean"]
        metrics["gold_start"] = history[0]["gold/mean"]
    return metrics
