"""GRPO against the reward model or a programmatic reward (Shao et al. 2024): no critic.

Each iteration:
  1. rollouts: take ``prompts_per_iteration`` prompts and sample ``group_size`` responses to
     each (one batched, KV-cached generation of prompts x G rows, group-major);
  2. score: the reward model's score (or ``reward_function``'s), plus a penalty when the
     response never emits EOS;
  3. advantages, as ``estimator`` says: each response's score relative to its group,
     (r - mean) / std ("grpo"), or minus the mean of the other responses to its prompt
     ("rloo"); or per token ("reinforce_pp", REINFORCE++): the return of rewards that carry
     the k1 KL penalty on every token, normalised over the whole batch;
  4. update: ``grpo_epochs`` passes over minibatches with PPO-Clip on those advantages plus
     ``kl_coef`` x the k3 estimate of KL(policy || SFT reference) in the loss (not for
     reinforce_pp, whose KL penalty is in the reward).

Models: the policy starts from the SFT model, the frozen reference is the SFT model, and the
frozen reward model scores. Generation, log-probs and scoring are the ones PPO uses
(``stages/on_policy.py``); so are the loop, guards, logging and checkpoints
(``training/on_policy_loop.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.algorithms.grpo import group_advantages, grpo_policy_loss
from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.masked import masked_mean
from rlhf.algorithms.reinforce_pp import reinforce_pp_advantages
from rlhf.algorithms.rloo import rloo_advantages
from rlhf.config import GRPOConfig
from rlhf.data.artifacts import manifest_checksum
from rlhf.modeling.forward import response_logprobs
from rlhf.modeling.generation import Rollout, decode_responses
from rlhf.modeling.lora import adapters_disabled
from rlhf.stages.on_policy import (
    HISTORY_FILE,
    ON_POLICY_WEIGHT_DECAY,
    ResponseRewards,
    check_reward_source,
    load_policies,
    load_prompts,
    publish_policy,
)
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.stages.specs import GRPOInputs, ModelOutputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training.engine import build_engine
from rlhf.training.guards import kl_stats
from rlhf.training.on_policy_loop import (
    Experience,
    OnPolicyAlgorithm,
    Trained,
    result_metrics,
    train_on_policy,
)

__all__ = ["HISTORY_FILE", "GRPOInputs", "ModelOutputs", "run"]


@dataclass
class GroupBatch:
    """One iteration's responses, group-major ((prompts x G) rows); response tensors (N, R)."""

    rollout: Rollout
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    # (N,) each response's score relative to its group, or (N, R) per token (reinforce_pp)
    advantages: torch.Tensor


def run(
    config: GRPOConfig, inputs: GRPOInputs, outputs: ModelOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    check_reward_source(inputs.reward_model, config)  # the config checked itself when built
    tracker, started, device, ckpt_root, fingerprint, latest, _ = start_training(
        "grpo", config, inputs, outputs.model, tracker
    )

    # --- models and data --------------------------------------------------------------------
    loaded = load_policies(inputs.sft_model, config, device)
    tokenizer, policy, reference = loaded.tokenizer, loaded.policy, loaded.reference
    rewards_source = ResponseRewards(inputs.reward_model, config, device)
    prompt_set = load_prompts(inputs.prompts, tokenizer, config)
    # AdamW's default decay (0.01) on every weight, as GRPO's results were measured with.
    engine = build_engine(policy, config.lr, ON_POLICY_WEIGHT_DECAY, config.max_grad_norm,
                          config.distributed, device, decay_matrices_only=False)  # fmt: skip
    sampler = RolloutSampler(engine, tokenizer, config, device)
    scoring = dict(temperature=config.temperature, rows_per_forward=config.scoring_batch_size)
    G = config.group_size

    # --- rollouts and advantages (the loop runs this under no_grad) --------------------------
    def rollout(prompt_rows: list[int], iteration: int) -> Experience:
        rows = [i for i in prompt_rows for _ in range(G)]  # group-major: G copies of each
        # Under ZeRO-3 the weights are gathered whole for generation.
        with engine.gathered():
            sampled = sampler.sample(prompt_set.token_ids(rows))
            args = (sampled.input_ids, sampled.attention_mask, sampled.prompt_width)
            old_logprobs, _ = response_logprobs(policy, *args, **scoring)
        with adapters_disabled(reference):  # under LoRA the reference is the policy
            ref_logprobs, _ = response_logprobs(reference, *args, **scoring)
        mask = sampled.response_mask.float()
        texts = decode_responses(tokenizer, sampled)
        prompts = prompt_set.messages(rows)
        scores = rewards_source.score(prompts, texts, sampled.ended)
        if config.estimator == "rloo":
            advantages = rloo_advantages(scores, G)
        elif config.estimator == "reinforce_pp":
            token_kl = kl_penalty(old_logprobs, ref_logprobs, "k1")
            advantages = reinforce_pp_advantages(scores, token_kl, mask, config.kl_coef)
        else:
            advantages = group_advantages(scores, G, config.scale_advantages)
        grouped = scores.view(-1, G)
        stats = {
            "reward/score_mean": scores.mean().item(),
            "reward/score_std": scores.std().item(),
            # Groups whose responses all scored the same teach nothing this iteration.
            "reward/zero_std_groups": (grouped.std(dim=1) == 0).float().mean().item(),
            "reward/group_std_mean": grouped.std(dim=1).mean().item(),
            **kl_stats(sequence_kl(kl_penalty(old_logprobs, ref_logprobs, "k1") * mask, mask)),
            "kl/coef": config.kl_coef,
            "response/length_mean": mask.sum(-1).mean().item(),
            "response/eos_fraction": sampled.ended.float().mean().item(),
        }
        gold_mean = rewards_source.gold_mean(prompts, texts)
        if gold_mean is not None:
            stats["gold/mean"] = gold_mean
        shown = [m[-1]["content"] for m in prompts]
        batch = GroupBatch(sampled, old_logprobs, ref_logprobs, advantages)
        return Experience(batch, len(rows), stats, (shown, texts, scores.tolist()))

    # --- the loss: PPO-Clip on the group advantages + kl_coef x k3 KL to the reference -------
    # (REINFORCE++ has its KL penalty in the reward already.)
    loss_kl_coef = 0.0 if config.estimator == "reinforce_pp" else config.kl_coef

    def loss(batch: GroupBatch, mb: torch.Tensor, gradient_step: int):
        sub = batch.rollout.select(mb)
        logprobs, entropy = response_logprobs(
            engine.module, sub.input_ids, sub.attention_mask, sub.prompt_width,
            temperature=config.temperature, with_entropy=True,
        )  # fmt: skip
        mask = sub.response_mask.float()
        total, pg_stats = grpo_policy_loss(
            logprobs, batch.old_logprobs[mb], batch.ref_logprobs[mb], batch.advantages[mb], mask,
            config.clip_eps, loss_kl_coef,
        )  # fmt: skip
        return {"policy": total}, {
            "loss/policy": total.item(),
            "policy/entropy": masked_mean(entropy.detach(), mask).item(),
            **{f"policy/{k}": v for k, v in pg_stats.items()},
        }

    # --- the loop ---------------------------------------------------------------------------
    algorithm = OnPolicyAlgorithm(
        name="grpo",
        trained=[Trained("policy", engine, config.lr)],
        prompts_per_iteration=config.prompts_per_iteration,
        epochs=config.grpo_epochs,
        minibatch_size=config.minibatch_size,
        rollout=rollout,
        loss=loss,
        responses_per_prompt=G,
        release=sampler.close,
        sampling_clock=sampler.take_seconds,
    )
    history = train_on_policy(algorithm, config, len(prompt_set), device, tracker, started,
                              ckpt_root, fingerprint, latest)  # fmt: skip

    description = {
        "artifact": "grpo_policy",
        "estimator": config.estimator,
        "sft_model": inputs.sft_model,
        "reward_model": inputs.reward_model,
        "reward_function": config.reward_function,
        "data": inputs.prompts,
        "data_sha256": manifest_checksum(inputs.prompts),
    }
    metrics = result_metrics(history, started)
    return publish_policy(engine, tokenizer, outputs.model, description, metrics, history,
                          config, ckpt_root, tracker)  # fmt: skip
