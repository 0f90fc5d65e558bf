"""Stage 3: PPO against the reward model (InstructGPT's objective).

Each iteration:
  1. rollouts: sample one response per prompt from the policy (batched, KV-cached);
  2. score: the reward model's score at the last response token (plus a penalty when the
     response never emits EOS), minus ``kl_coef`` x the per-token KL(policy || SFT reference);
  3. advantages: GAE(gamma, lambda) with the critic's values, whitened;
  4. update: ``ppo_epochs`` passes over minibatches with the PPO-Clip (or PPO-Penalty) policy
     loss, a clipped value loss and, for PPO-ptx, a language-model loss on SFT data;
  5. adapt the KL coefficient toward its target (Ziegler et al. 2019).

Models: the policy starts from the SFT model, the frozen reference is the SFT model, the frozen
reward model scores, and the critic starts from the reward model (or the policy).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import set_seed

from rlhf import models
from rlhf.algorithms.gae import gae_advantages
from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.kl_control import AdaptivePenaltyCoef, make_kl_controller
from rlhf.algorithms.masked import masked_mean
from rlhf.algorithms.ppo_loss import (
    clipped_value_loss,
    explained_variance,
    ppo_clip_policy_loss,
    ppo_penalty_policy_loss,
)
from rlhf.algorithms.rewards import RunningMoments, normalize_and_clip_scores, token_level_rewards
from rlhf.algorithms.sft_loss import response_nll
from rlhf.algorithms.whiten import masked_whiten
from rlhf.config import PPOConfig, to_dict
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.encoding import Encoded, encode_conversation, encode_prompt
from rlhf.forward import response_logprobs, response_values, sequence_logits
from rlhf.generation import Rollout, SamplingConfig, decode_responses, sample_responses
from rlhf.gold import load_reward_function
from rlhf.prompt_stream import batch_indices
from rlhf.reward_scoring import RewardScorer
from rlhf.stages.publish import checkpoint_root, publish_model
from rlhf.stages.sft import collate
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training.errors import NonFiniteLossError

log = logging.getLogger("rlhf.ppo")

HISTORY_FILE = "training_history.json"  # per-iteration metrics, read by the evaluation report
NEGATIVE_KL_TOLERANCE = 0.01  # nats per response: below -this the negative-KL guard fires


@dataclass
class PPOInputs:
    prompts: str  # prepared prompts artifact
    sft_model: str  # policy initialisation and frozen reference
    reward_model: str  # frozen reward model (and the critic's default initialisation)
    sft_data: str | None = None  # prepared sft artifact, needed for PPO-ptx only


@dataclass
class PPOOutputs:
    model: str  # folder for the trained policy


@dataclass
class Experience:
    """One rollout batch with everything the update needs, all detached. Response tensors are
    (B, R); ``scores`` (B,) are the (normalised) sequence scores that entered the rewards."""

    rollout: Rollout
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.rollout.response_mask.float()

    def select(self, rows: torch.Tensor) -> Experience:
        return Experience(
            self.rollout.select(rows),
            self.old_logprobs[rows],
            self.ref_logprobs[rows],
            self.values[rows],
            self.advantages[rows],
            self.returns[rows],
            self.scores[rows],
        )


def _warmup(iteration: int, warmup: int) -> float:
    return min(1.0, (iteration + 1) / warmup) if warmup > 0 else 1.0


def run(
    config: PPOConfig, inputs: PPOInputs, outputs: PPOOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    tracker = tracker or Tracker()
    started = time.time()
    set_seed(config.seed)
    device = models.pick_device(config.device)
    tracker.log_params({f"ppo.{k}": v for k, v in to_dict(config).items()})
    gold = load_reward_function(config.gold_reward) if config.gold_reward else None
    reward_fn = load_reward_function(config.reward_function) if config.reward_function else None

    # --- models -------------------------------------------------------------------------
    tokenizer = models.load_tokenizer(inputs.sft_model, config.trust_remote_code)
    policy = models.load_causal_lm(inputs.sft_model, config.dtype, config.trust_remote_code)
    reference = models.load_causal_lm(inputs.sft_model, config.dtype, config.trust_remote_code)
    reference.requires_grad_(False).eval()
    critic_source = inputs.reward_model if config.critic_init == "reward" else inputs.sft_model
    if config.critic_init not in ("reward", "policy"):
        raise ValueError(f"critic_init must be 'reward' or 'policy', got {config.critic_init!r}")
    critic = models.load_reward_model(critic_source, config.dtype, config.trust_remote_code)
    critic.config.pad_token_id = tokenizer.pad_token_id
    scorer = RewardScorer.load(inputs.reward_model, config.device, config.dtype)
    for m in (policy, reference, critic):
        m.to(device)
    policy.config.use_cache = True  # generation reuses the KV cache

    # --- data ---------------------------------------------------------------------------
    prompt_rows = load_split(inputs.prompts, "train")
    prompt_messages = [r["prompt"] for r in prompt_rows]
    prompt_ids = [
        encode_prompt(tokenizer, msgs, config.chat_template)[-config.max_prompt_length :]
        for msgs in prompt_messages
    ]
    ptx_set: list[Encoded] = []
    if config.ptx_coef > 0:
        if not inputs.sft_data:
            raise ValueError("ptx_coef > 0 needs the sft data (PPO-ptx mixes in its LM loss)")
        ptx_set = [
            encode_conversation(
                tokenizer,
                r["messages"],
                config.max_prompt_length + config.max_new_tokens,
                config.chat_template,
            )
            for r in load_split(inputs.sft_data, "train")
        ]

    sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=config.lr, betas=(0.9, 0.95))
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=config.critic_lr, betas=(0.9, 0.95))
    kl_ctl = make_kl_controller(
        config.kl_control, config.kl_coef, config.kl_target, config.kl_horizon
    )
    penalty = AdaptivePenaltyCoef(config.penalty_beta, config.penalty_target_kl)
    moments = RunningMoments()
    history: list[dict[str, float]] = []
    first_length: float | None = None
    start_iteration = 0

    ckpt_root = checkpoint_root(outputs.model, config.checkpoint_dir)
    latest = ckpt.latest_checkpoint(ckpt_root)
    if latest is not None:
        state = ckpt.load_checkpoint(latest)
        policy.load_state_dict(state["policy"])
        critic.load_state_dict(state["critic"])
        policy_opt.load_state_dict(state["policy_opt"])
        critic_opt.load_state_dict(state["critic_opt"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        penalty.load_state_dict(state["penalty"])
        moments.load_state_dict(state["moments"])
        ckpt.restore_rng(state["rng"])
        history = state["history"]
        first_length = state["first_length"]
        start_iteration = state["iteration"]
        log.info("ppo: resuming from %s (iteration %d)", latest, start_iteration)
        tracker.set_tags({"resumed_from_step": start_iteration})

    def save(iteration: int) -> None:
        ckpt.save_checkpoint(
            ckpt_root,
            iteration,
            {
                "policy": policy.state_dict(),
                "critic": critic.state_dict(),
                "policy_opt": policy_opt.state_dict(),
                "critic_opt": critic_opt.state_dict(),
                "kl_ctl": kl_ctl.state_dict(),
                "penalty": penalty.state_dict(),
                "moments": moments.state_dict(),
                "rng": ckpt.capture_rng(),
                "history": history,
                "first_length": first_length,
                "iteration": iteration,
            },
            keep=config.keep_checkpoints,
        )

    # --- rollouts -----------------------------------------------------------------------
    @torch.no_grad()
    def make_experience(rows: list[int]) -> tuple[Experience, dict[str, float], list[str]]:
        rollout = sample_responses(policy, tokenizer, [prompt_ids[i] for i in rows], sampling)
        args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
        old_logprobs, _ = response_logprobs(policy, *args, temperature=config.temperature)
        ref_logprobs, _ = response_logprobs(reference, *args, temperature=config.temperature)
        mask = rollout.response_mask.float()
        values = response_values(critic, *args) * mask
        texts = decode_responses(tokenizer, rollout)
        if reward_fn is None:
            raw = scorer.score([prompt_messages[i] for i in rows], texts).to(device)
        else:
            raw = torch.tensor(
                [reward_fn(prompt_messages[i], t) for i, t in zip(rows, texts, strict=True)],
                device=device,
            )
        # A response cut off at max_new_tokens is not an answer; make that visible in reward.
        raw = raw + config.missing_eos_penalty * (~rollout.ended).float()
        scores = normalize_and_clip_scores(
            raw, moments if config.normalize_scores else None, config.score_clip
        )
        kl = kl_penalty(old_logprobs, ref_logprobs, config.kl_estimator) * mask
        rewards = token_level_rewards(scores, kl, mask, kl_ctl.value)
        advantages, returns = gae_advantages(rewards, values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        seq_kl = sequence_kl(kl, mask)
        stats = {
            "reward/score_mean": raw.mean().item(),
            "reward/score_std": raw.std().item() if len(raw) > 1 else 0.0,
            "reward/total_mean": rewards.sum(-1).mean().item(),
            "kl/mean": seq_kl.mean().item(),
            "kl/coef": kl_ctl.value,
            "response/length_mean": mask.sum(-1).mean().item(),
            "response/eos_fraction": rollout.ended.float().mean().item(),
            "value/explained_variance": explained_variance(values, returns, mask),
        }
        if gold is not None:
            golds = [gold(prompt_messages[i], t) for i, t in zip(rows, texts, strict=True)]
            stats["gold/mean"] = sum(golds) / len(golds)
        exp = Experience(rollout, old_logprobs, ref_logprobs, values, advantages, returns, scores)
        return exp, stats, texts

    # --- update -------------------------------------------------------------------------
    def ppo_update(exp: Experience, iteration: int) -> dict[str, float]:
        policy.train()
        critic.train()
        sums: dict[str, list[float]] = {}
        n = exp.rollout.input_ids.shape[0]
        for epoch in range(config.ppo_epochs):
            order = torch.randperm(n, device=device)
            for start in range(0, n, config.minibatch_size):
                mb = exp.select(order[start : start + config.minibatch_size])
                args = (mb.rollout.input_ids, mb.rollout.attention_mask, mb.rollout.prompt_width)
                logprobs, entropy = response_logprobs(
                    policy, *args, temperature=config.temperature, with_entropy=True
                )
                if config.policy_loss == "clip":
                    pg_loss, pg_stats = ppo_clip_policy_loss(
                        logprobs, mb.old_logprobs, mb.advantages, mb.mask, config.clip_eps
                    )
                elif config.policy_loss == "penalty":
                    pg_loss, pg_stats = ppo_penalty_policy_loss(
                        logprobs, mb.old_logprobs, mb.advantages, mb.mask, penalty.value
                    )
                else:
                    raise ValueError(
                        f"policy_loss must be 'clip' or 'penalty': {config.policy_loss!r}"
                    )
                values = response_values(critic, *args)
                vf_loss, vf_stats = clipped_value_loss(
                    values, mb.values, mb.returns, mb.mask, config.value_clip
                )
                loss = pg_loss + config.vf_coef * vf_loss
                if ptx_set:
                    # Its own reproducible stream of SFT batches, one per gradient step.
                    per_epoch = math.ceil(n / config.minibatch_size)
                    ptx_step = (iteration * config.ppo_epochs + epoch) * per_epoch
                    ptx_step += start // config.minibatch_size
                    picks = batch_indices(
                        len(ptx_set), config.ptx_batch_size, config.seed, ptx_step
                    )
                    batch = collate([ptx_set[i] for i in picks], tokenizer.pad_token_id)
                    b = {k: v.to(device) for k, v in batch.items()}
                    logits = sequence_logits(policy, b["input_ids"], b["attention_mask"])
                    ptx_loss = response_nll(logits, b["input_ids"], b["loss_mask"])
                    loss = loss + config.ptx_coef * ptx_loss
                    sums.setdefault("loss/ptx", []).append(ptx_loss.item())
                if not torch.isfinite(loss):
                    last = ckpt.latest_checkpoint(ckpt_root)
                    raise NonFiniteLossError(
                        f"ppo: loss is {loss.item()} at iteration {iteration} (policy "
                        f"{pg_loss.item()}, value {vf_loss.item()}); stopping. "
                        f"Last good checkpoint: {last or 'none yet'}"
                    )
                policy_opt.zero_grad(set_to_none=True)
                critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), config.max_grad_norm)
                policy_opt.step()
                critic_opt.step()
                step_stats = {
                    "loss/policy": pg_loss.item(),
                    "loss/value": vf_loss.item(),
                    "loss/total": loss.item(),
                    "policy/entropy": masked_mean(entropy.detach(), mb.mask).item(),
                    **{f"policy/{k}": v for k, v in pg_stats.items()},
                    **{f"value/{k}": v for k, v in vf_stats.items()},
                }
                for k, v in step_stats.items():
                    sums.setdefault(k, []).append(v)
        out = {k: sum(v) / len(v) for k, v in sums.items()}
        if config.policy_loss == "penalty":
            penalty.update(out.get("policy/kl_old_new", 0.0))
            out["policy/penalty_beta"] = penalty.value
        return out

    # --- the loop -----------------------------------------------------------------------
    for iteration in range(start_iteration, config.iterations):
        factor = _warmup(iteration, config.warmup_iterations)
        for opt, lr in ((policy_opt, config.lr), (critic_opt, config.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        rows = batch_indices(len(prompt_ids), config.rollout_batch_size, config.seed, iteration)
        exp, stats, texts = make_experience(rows)
        stats.update(ppo_update(exp, iteration))
        kl_ctl.update(stats["kl/mean"], config.rollout_batch_size)
        step = iteration + 1

        # Guards for the known failure modes: they warn and are recorded, training goes on.
        if first_length is None:
            first_length = stats["response/length_mean"]
        # A small negative k1 mean is sampling noise; a clearly negative one is not.
        stats["guard/negative_kl"] = float(stats["kl/mean"] < -NEGATIVE_KL_TOLERANCE)
        if stats["guard/negative_kl"]:
            log.warning(
                "ppo iteration %d: mean KL to the reference is negative (%.3f): with the k1 "
                "estimator this means sampling does not match the log-probs (temperature, "
                "top-p) or a bug", step, stats["kl/mean"],
            )  # fmt: skip
        stats["guard/entropy_collapse"] = float(stats["policy/entropy"] < config.entropy_floor)
        if stats["guard/entropy_collapse"]:
            log.warning(
                "ppo iteration %d: policy entropy %.4f is below %.4f: the policy is collapsing",
                step, stats["policy/entropy"], config.entropy_floor,
            )  # fmt: skip
        ratio = stats["response/length_mean"] / max(first_length, 1e-6)
        stats["guard/length_drift"] = float(
            ratio > config.length_drift or ratio < 1 / config.length_drift
        )
        if stats["guard/length_drift"]:
            log.warning(
                "ppo iteration %d: mean response length %.1f drifted from %.1f at the start",
                step, stats["response/length_mean"], first_length,
            )  # fmt: skip

        history.append({"step": step, **stats})
        if step % config.log_every == 0 or step == config.iterations:
            tracker.log_metrics(stats, step=step)
            log.info(
                "ppo %d/%d score %.3f kl %.3f (coef %.4f) len %.1f%s (%.0fs)",
                step, config.iterations, stats["reward/score_mean"], stats["kl/mean"],
                stats["kl/coef"], stats["response/length_mean"],
                f" gold {stats['gold/mean']:.3f}" if "gold/mean" in stats else "",
                time.time() - started,
            )  # fmt: skip
        if config.sample_every > 0 and (step % config.sample_every == 0 or step == 1):
            k = min(config.samples_logged, len(rows))
            table: dict[str, list[Any]] = {
                "step": [step] * k,
                "prompt": [prompt_messages[i][-1]["content"] for i in rows[:k]],
                "response": texts[:k],
                "score": [round(float(s), 4) for s in exp.scores[:k]],
            }
            tracker.log_table(table, f"samples/step_{step:05d}.json")
        last_step = step == config.iterations  # the published model supersedes a checkpoint
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0 and not last_step:
            save(step)

    last = history[-1] if history else {}
    metrics = {
        "score_mean": last.get("reward/score_mean", math.nan),
        "score_start": history[0]["reward/score_mean"] if history else math.nan,
        "kl_mean": last.get("kl/mean", math.nan),
        "kl_coef": kl_ctl.value,
        "length_mean": last.get("response/length_mean", math.nan),
        "iterations": float(len(history)),
        "seconds": time.time() - started,
    }
    if "gold/mean" in last:
        metrics["gold_mean"] = last["gold/mean"]
        metrics["gold_start"] = history[0]["gold/mean"]
    publish_model(
        policy,
        tokenizer,
        outputs.model,
        {
            "artifact": "ppo_policy",
            "sft_model": inputs.sft_model,
            "reward_model": inputs.reward_model,
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
