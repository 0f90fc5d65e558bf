"""GRPO against the reward model or a programmatic reward (Shao et al. 2024): no critic.

Each iteration:
  1. rollouts: take ``prompts_per_iteration`` prompts and sample ``group_size`` responses to
     each (one batched, KV-cached generation of prompts x G rows, group-major);
  2. score: the reward model's score (or ``reward_function``'s), plus a penalty when the
     response never emits EOS;
  3. advantages: each response's score relative to its group, (r - mean) / std;
  4. update: ``grpo_epochs`` passes over minibatches with PPO-Clip on those advantages plus
     ``kl_coef`` x the k3 estimate of KL(policy || SFT reference) in the loss.

Models: the policy starts from the SFT model, the frozen reference is the SFT model, and the
frozen reward model scores. Generation, log-probs, scoring, guards, logging and checkpoints are
the ones PPO uses (``stages/on_policy.py``).
"""

from __future__ import annotations

import logging
import shutil

import torch

from rlhf.algorithms.grpo import group_advantages, grpo_policy_loss
from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.masked import masked_mean
from rlhf.config import GRPOConfig
from rlhf.console.progress import Progress
from rlhf.data.artifacts import manifest_checksum
from rlhf.modeling.forward import response_logprobs
from rlhf.modeling.generation import SamplingConfig, decode_responses, sample_responses
from rlhf.stages.on_policy import (
    HISTORY_FILE,
    Guards,
    ResponseRewards,
    load_policies,
    load_prompts,
    log_iteration,
    result_metrics,
)
from rlhf.stages.publish import publish_model
from rlhf.stages.specs import GRPOInputs, PolicyOutputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training.errors import NonFiniteLossError
from rlhf.training.prompt_stream import batch_indices
from rlhf.training.schedule import warmup_then

log = logging.getLogger("rlhf.grpo")


def _check(config: GRPOConfig) -> None:
    problems = []
    if config.group_size < 2:
        problems.append("group_size must be >= 2 (advantages are relative to the group)")
    if config.prompts_per_iteration < 1 or config.minibatch_size < 1 or config.grpo_epochs < 1:
        problems.append("prompts_per_iteration, minibatch_size and grpo_epochs must be >= 1")
    if config.kl_coef < 0:
        problems.append("kl_coef must be >= 0")
    if problems:
        raise ValueError("grpo config: " + "; ".join(problems))


def run(
    config: GRPOConfig, inputs: GRPOInputs, outputs: PolicyOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    _check(config)
    tracker, started, device, ckpt_root, fingerprint, latest = start_training(
        "grpo", config, inputs, outputs.model, tracker
    )

    loaded = load_policies(inputs.sft_model, config, device)
    tokenizer, policy, reference = loaded.tokenizer, loaded.policy, loaded.reference
    rewards_source = ResponseRewards(inputs.reward_model, config)
    prompt_messages, prompt_ids = load_prompts(inputs.prompts, tokenizer, config)
    sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, betas=(0.9, 0.95))
    guards = Guards("grpo", config)
    history: list[dict[str, float]] = []
    start_iteration = 0
    G = config.group_size

    if latest is not None:
        state = ckpt.load_checkpoint(latest)
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        guards.load_state_dict(state["guards"])
        ckpt.restore_rng(state["rng"])
        history = state["history"]
        start_iteration = state["iteration"]
        log.info("grpo: resuming from %s (iteration %d)", latest, start_iteration)
        tracker.set_tags({"resumed_from_step": start_iteration})

    progress = Progress("grpo training", config.iterations, "iteration", start_iteration)
    for iteration in range(start_iteration, config.iterations):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_then(
                iteration, config.iterations, config.warmup_iterations, config.lr_schedule
            )
        rows = batch_indices(len(prompt_ids), config.prompts_per_iteration, config.seed, iteration)
        rows = [i for i in rows for _ in range(G)]  # group-major: G copies of each prompt

        # --- rollouts and advantages (no gradient) --------------------------------------
        with torch.no_grad():
            rollout = sample_responses(policy, tokenizer, [prompt_ids[i] for i in rows], sampling)
            args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
            old_logprobs, _ = response_logprobs(policy, *args, temperature=config.temperature)
            ref_logprobs, _ = response_logprobs(reference, *args, temperature=config.temperature)
            mask = rollout.response_mask.float()
            texts = decode_responses(tokenizer, rollout)
            prompts = [prompt_messages[i] for i in rows]
            scores = rewards_source.score(prompts, texts, rollout.ended)
            advantages = group_advantages(scores, G, config.scale_advantages)
            grouped = scores.view(-1, G)
            stats = {
                "reward/score_mean": scores.mean().item(),
                "reward/score_std": scores.std().item(),
                # Groups whose responses all scored the same teach nothing this iteration.
                "reward/zero_std_groups": (grouped.std(dim=1) == 0).float().mean().item(),
                "reward/group_std_mean": grouped.std(dim=1).mean().item(),
                "kl/mean": sequence_kl(kl_penalty(old_logprobs, ref_logprobs, "k1") * mask, mask)
                .mean()
                .item(),
                "kl/coef": config.kl_coef,
                "response/length_mean": mask.sum(-1).mean().item(),
                "response/eos_fraction": rollout.ended.float().mean().item(),
            }
            gold_mean = rewards_source.gold_mean(prompts, texts)
            if gold_mean is not None:
                stats["gold/mean"] = gold_mean

        # --- update ----------------------------------------------------------------------
        policy.train()
        sums: dict[str, list[float]] = {}
        n = len(rows)
        for _ in range(config.grpo_epochs):
            order = torch.randperm(n, device=device)
            for start in range(0, n, config.minibatch_size):
                mb = order[start : start + config.minibatch_size]
                sub = rollout.select(mb)
                logprobs, entropy = response_logprobs(
                    policy, sub.input_ids, sub.attention_mask, sub.prompt_width,
                    temperature=config.temperature, with_entropy=True,
                )  # fmt: skip
                mb_mask = mask[mb]
                loss, pg_stats = grpo_policy_loss(
                    logprobs, old_logprobs[mb], ref_logprobs[mb], advantages[mb], mb_mask,
                    config.clip_eps, config.kl_coef,
                )  # fmt: skip
                if not torch.isfinite(loss):
                    last = ckpt.latest_checkpoint(ckpt_root)
                    raise NonFiniteLossError(
                        f"grpo: loss is {loss.item()} at iteration {iteration}; stopping. "
                        f"Last good checkpoint: {last or 'none yet'}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                step_stats = {
                    "loss/policy": loss.item(),
                    "policy/entropy": masked_mean(entropy.detach(), mb_mask).item(),
                    **{f"policy/{k}": v for k, v in pg_stats.items()},
                }
                for k, v in step_stats.items():
                    sums.setdefault(k, []).append(v)
        stats.update({k: sum(v) / len(v) for k, v in sums.items()})

        step = iteration + 1
        guards.check(stats, step)
        history.append({"step": step, **stats})
        shown = [prompt_messages[i][-1]["content"] for i in rows]
        log_iteration(
            tracker, config, "grpo", step, stats, started, (shown, texts, scores.tolist())
        )
        progress.update(1, score=stats["reward/score_mean"], kl=stats["kl/mean"])
        last_step = step == config.iterations  # the published model supersedes a checkpoint
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0 and not last_step:
            ckpt.save_checkpoint(
                ckpt_root,
                step,
                {
                    "policy": policy.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "guards": guards.state_dict(),
                    "rng": ckpt.capture_rng(),
                    "history": history,
                    "iteration": step,
                },
                keep=config.keep_checkpoints,
                fingerprint=fingerprint,
            )

    progress.close()
    metrics = result_metrics(history, started)
    publish_model(
        policy,
        tokenizer,
        outputs.model,
        {
            "artifact": "grpo_policy",
            "sft_model": inputs.sft_model,
            "reward_model": inputs.reward_model,
            "reward_function": config.reward_function,
            "data": inputs.prompts,
            "data_sha256": manifest_checksum(inputs.prompts),
            "metrics": metrics,
        },
        tracker,
        extra_files={HISTORY_FILE: history},
        log_artifacts=config.log_model_artifacts,
        publish_to=config.publish_to,
    )
    if not config.checkpoint_dir:
        shutil.rmtree(ckpt_root, ignore_errors=True)
    tracker.log_metrics({f"final/{k}": v for k, v in metrics.items()})
    return metrics
