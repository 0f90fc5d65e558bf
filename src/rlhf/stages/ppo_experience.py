"""PPO's two halves, each one named function: building the experience of one rollout batch
(sample, score, KL-penalised per-token rewards, GAE advantages) and the loss of one minibatch
of it (PPO-Clip or PPO-Penalty, the clipped value loss, and PPO-ptx's language-model loss).
The math itself is in ``algorithms/`` (pure functions, shapes in their docstrings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.algorithms.gae import gae_advantages
from rlhf.algorithms.kl import kl_penalty, sequence_kl
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
from rlhf.modeling.encoding import Encoded, Messages
from rlhf.modeling.forward import response_logprobs, response_values, sequence_logits
from rlhf.modeling.generation import Rollout, decode_responses
from rlhf.modeling.lora import adapters_disabled
from rlhf.modeling.padding import collate
from rlhf.stages.on_policy import ResponseRewards
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.training.guards import kl_stats
from rlhf.training.prompt_stream import batch_indices


@dataclass
class PPOExperience:
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

    def select(self, rows: torch.Tensor) -> PPOExperience:
        return PPOExperience(
            self.rollout.select(rows),
            self.old_logprobs[rows],
            self.ref_logprobs[rows],
            self.values[rows],
            self.advantages[rows],
            self.returns[rows],
            self.scores[rows],
        )


@dataclass
class PPOModels:
    tokenizer: PreTrainedTokenizerBase
    # Trained models are the models themselves in rollouts and their engines' wrappers
    # (DDP, DeepSpeed) in the loss, where the gradients must go through them.
    policy: torch.nn.Module  # trained
    reference: PreTrainedModel  # frozen SFT model, the KL anchor (LoRA: the policy, adapters off)
    critic: torch.nn.Module  # trained value model (TokenValues): one value per token


@torch.no_grad()
def make_experience(
    models: PPOModels,
    sampler: RolloutSampler,
    rewards_source: ResponseRewards,
    prompts: list[Messages],
    prompt_ids: list[list[int]],
    config: PPOConfig,
    kl_coef: float,
    moments: RunningMoments,
) -> tuple[PPOExperience, dict[str, float], list[str]]:
    """Sample one response per prompt (``sampler``, from ``models.policy``) and turn it into
    PPO's experience: the returned stats (``reward/*``, ``kl/*``, ``response/*``,
    ``value/explained_variance``, ``gold/mean``) and the decoded responses.

    rewards (B, R) = score on the last response token - ``kl_coef`` x per-token KL(policy ||
    reference), the score normalised with ``moments`` when ``normalize_scores`` and clipped
    to ``score_clip``; advantages and returns by GAE(gamma, lam) with the critic's values,
    advantages whitened when ``whiten_advantages``."""
    rollout = sampler.sample(prompt_ids)
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
    rows = config.scoring_batch_size  # rollout rows per forward pass (None: all)
    scoring = dict(temperature=config.temperature, rows_per_forward=rows)
    old_logprobs, _ = response_logprobs(models.policy, *args, **scoring)
    with adapters_disabled(models.reference):  # under LoRA the reference is the policy
        ref_logprobs, _ = response_logprobs(models.reference, *args, **scoring)
    mask = rollout.response_mask.float()
    values = response_values(models.critic, *args, rows_per_forward=rows) * mask
    texts = decode_responses(models.tokenizer, rollout)
    raw = rewards_source.score(prompts, texts, rollout.ended)
    scores = normalize_and_clip_scores(
        raw, moments if config.normalize_scores else None, config.score_clip
    )
    kl = kl_penalty(old_logprobs, ref_logprobs, config.kl_estimator) * mask
    rewards = token_level_rewards(scores, kl, mask, kl_coef)
    advantages, returns = gae_advantages(rewards, values, mask, config.gamma, config.lam)
    if config.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    stats = {
        "reward/score_mean": raw.mean().item(),
        "reward/score_std": raw.std().item() if len(raw) > 1 else 0.0,
        "reward/total_mean": rewards.sum(-1).mean().item(),
        **kl_stats(sequence_kl(kl, mask)),
        "kl/coef": kl_coef,
        "response/length_mean": mask.sum(-1).mean().item(),
        "response/eos_fraction": rollout.ended.float().mean().item(),
        "value/explained_variance": explained_variance(values, returns, mask),
    }
    gold_mean = rewards_source.gold_mean(prompts, texts)
    if gold_mean is not None:
        stats["gold/mean"] = gold_mean
    exp = PPOExperience(rollout, old_logprobs, ref_logprobs, values, advantages, returns, scores)
    return exp, stats, texts


def ppo_loss(
    models: PPOModels, mb: PPOExperience, config: PPOConfig, penalty_beta: float
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The policy's loss (PPO-Clip with ``clip_eps``, or PPO-Penalty with ``penalty_beta``)
    and the critic's, ``vf_coef`` x the value loss clipped to ``value_clip`` around the
    rollout's values, on minibatch ``mb``; with the stats ``loss/*``, ``policy/*`` and
    ``value/*``. (Their sum is the usual total: separate models, so the gradients are the
    same.)"""
    args = (mb.rollout.input_ids, mb.rollout.attention_mask, mb.rollout.prompt_width)
    logprobs, entropy = response_logprobs(
        models.policy, *args, temperature=config.temperature, with_entropy=True
    )
    if config.policy_loss == "clip":
        pg_loss, pg_stats = ppo_clip_policy_loss(
            logprobs, mb.old_logprobs, mb.advantages, mb.mask, config.clip_eps
        )
    else:  # "penalty" (PPOConfig allows no other)
        pg_loss, pg_stats = ppo_penalty_policy_loss(
            logprobs, mb.old_logprobs, mb.advantages, mb.mask, penalty_beta
        )
    values = response_values(models.critic, *args)
    vf_loss, vf_stats = clipped_value_loss(
        values, mb.values, mb.returns, mb.mask, config.value_clip
    )
    value_term = config.vf_coef * vf_loss
    return {"policy": pg_loss, "critic": value_term}, {
        "loss/policy": pg_loss.item(),
        "loss/value": vf_loss.item(),
        "loss/total": (pg_loss + value_term).item(),
        "policy/entropy": masked_mean(entropy.detach(), mb.mask).item(),
        **{f"policy/{k}": v for k, v in pg_stats.items()},
        **{f"value/{k}": v for k, v in vf_stats.items()},
    }


def ptx_loss(
    models: PPOModels, sft_set: Sequence[Encoded], config: PPOConfig, gradient_step: int
) -> torch.Tensor:
    """PPO-ptx: the language-model loss (mean NLL of the answer tokens) on a batch of
    ``ptx_batch_size`` SFT examples. Batch ``gradient_step`` of its own reproducible stream,
    so a resumed run mixes in the same batches."""
    picks = batch_indices(len(sft_set), config.ptx_batch_size, config.seed, gradient_step)
    batch = collate([sft_set[i] for i in picks], models.tokenizer.pad_token_id)
    device = next(models.policy.parameters()).device
    b = {k: v.to(device) for k, v in batch.items()}
    logits = sequence_logits(models.policy, b["input_ids"], b["attention_mask"])
    return response_nll(logits, b["input_ids"], b["loss_mask"])
