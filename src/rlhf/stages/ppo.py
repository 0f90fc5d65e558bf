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
from dataclasses import dataclass

import torch

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
from rlhf.config import PPOConfig
from rlhf.console.progress import Progress
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.modeling import models
from rlhf.modeling.encoding import Encoded, encode_conversation
from rlhf.modeling.forward import response_logprobs, response_values, sequence_logits
from rlhf.modeling.generation import Rollout, SamplingConfig, decode_responses, sample_responses
from rlhf.modeling.padding import collate
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
from rlhf.stages.specs import PolicyOutputs, PPOInputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training.errors import NonFiniteLossError
from rlhf.training.prompt_stream import batch_indices
from rlhf.training.schedule import warmup_then

log = logging.getLogger("rlhf.ppo")


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


def run(
    config: PPOConfig, inputs: PPOInputs, outputs: PolicyOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    # Before loading four models.
    tracker, started, device, ckpt_root, fingerprint, latest = start_training(
        "ppo", config, inputs, outputs.model, tracker
    )

    # --- models -------------------------------------------------------------------------
    loaded = load_policies(inputs.sft_model, config, device)
    tokenizer, policy, reference = loaded.tokenizer, loaded.policy, loaded.reference
    critic_source = inputs.reward_model if config.critic_init == "reward" else inputs.sft_model
    if config.critic_init not in ("reward", "policy"):
        raise ValueError(f"critic_init must be 'reward' or 'policy', got {config.critic_init!r}")
    critic = models.load_reward_model(critic_source, config.dtype, config.trust_remote_code)
    critic.config.pad_token_id = tokenizer.pad_token_id
    critic.to(device)
    rewards_source = ResponseRewards(inputs.reward_model, config)

    # --- data ---------------------------------------------------------------------------
    prompt_messages, prompt_ids = load_prompts(inputs.prompts, tokenizer, config)
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
    guards = Guards("ppo", config)
    history: list[dict[str, float]] = []
    start_iteration = 0

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
        guards.load_state_dict(state["guards"])
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
                "guards": guards.state_dict(),
                "iteration": iteration,
            },
            keep=config.keep_checkpoints,
            fingerprint=fingerprint,
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
        prompts = [prompt_messages[i] for i in rows]
        raw = rewards_source.score(prompts, texts, rollout.ended)
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
        gold_mean = rewards_source.gold_mean(prompts, texts)
        if gold_mean is not None:
            stats["gold/mean"] = gold_mean
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
    progress = Progress("ppo training", config.iterations, "iteration", start_iteration)
    for iteration in range(start_iteration, config.iterations):
        factor = warmup_then(
            iteration, config.iterations, config.warmup_iterations, config.lr_schedule
        )
        for opt, lr in ((policy_opt, config.lr), (critic_opt, config.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        rows = batch_indices(len(prompt_ids), config.rollout_batch_size, config.seed, iteration)
        exp, stats, texts = make_experience(rows)
        stats.update(ppo_update(exp, iteration))
        kl_ctl.update(stats["kl/mean"], config.rollout_batch_size)
        step = iteration + 1
        guards.check(stats, step)
        history.append({"step": step, **stats})
        shown = [prompt_messages[i][-1]["content"] for i in rows]
        log_iteration(
            tracker, config, "ppo", step, stats, started, (shown, texts, exp.scores.tolist())
        )
        progress.update(1, score=stats["reward/score_mean"], kl=stats["kl/mean"])
        last_step = step == config.iterations  # the published model supersedes a checkpoint
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0 and not last_step:
            save(step)

    progress.close()
    metrics = {**result_metrics(history, started), "kl_coef": kl_ctl.value}
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
