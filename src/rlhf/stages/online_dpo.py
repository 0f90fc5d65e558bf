"""Online iterative DPO (RLHFlow's recipe, Xiong et al. 2024; ChatLearn's OnlineDPO): DPO on
pairs the current policy samples and the reward model (or a judge) ranks, round after round.

Each round (an iteration of the on-policy loop, ``training/on_policy_loop.py``):
  1. sample: ``samples_per_prompt`` (K) answers to each of ``prompts_per_iteration`` prompts
     from the current policy (one batched generation, group-major, as GRPO samples);
  2. score: the reward model (or ``reward_function``, or ``judge``: ``stages/answer_scorers.py``);
  3. pair: per prompt its best answer against its worst, or every ranked pair; ties give none
     (``algorithms/preference_pairs.py``);
  4. DPO: ``dpo_epochs`` passes over the round's pairs in minibatches, the DPO loss
     (``algorithms/dpo_loss.py``) against the reference: the frozen SFT model, or the
     previous round's policy (the one that sampled the answers, its log-probs taken before the
     round's update).

The pairs are the sampled token ids themselves, scored at temperature 1 (the policy's own
log-probs, whatever temperature sampled them). The loop brings the rest: learning-rate
schedule, guards, history, metrics, progress and checkpoints at round boundaries (a killed run
resumes from its last one to the same weights), and several ranks: each samples and pairs its
share of the prompts, and the loop evens out their different numbers of pairs.
"""

from __future__ import annotations

import torch

from rlhf.algorithms.dpo_loss import dpo_loss
from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.masked import masked_mean
from rlhf.algorithms.preference_pairs import select_pairs
from rlhf.config import OnlineDPOConfig
from rlhf.data.artifacts import manifest_checksum
from rlhf.gold import load_reward_function
from rlhf.modeling.forward import response_logprobs
from rlhf.modeling.generation import Rollout, decode_responses
from rlhf.modeling.lora import adapters_disabled
from rlhf.stages.answer_scorers import answer_scorer
from rlhf.stages.on_policy import (
    HISTORY_FILE,
    ON_POLICY_WEIGHT_DECAY,
    check_reward_source,
    load_policies,
    load_prompts,
    publish_policy,
)
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.stages.specs import ModelOutputs, OnlineDPOInputs
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

__all__ = ["HISTORY_FILE", "ModelOutputs", "OnlineDPOInputs", "run"]


class RoundPairs:
    """One round's answers and the pairs made of them; answer tensors are (N,) or (N, R)."""

    def __init__(self, rollout: Rollout, pairs: torch.Tensor, ref_sums: torch.Tensor) -> None:
        self.rollout = rollout
        self.pairs = pairs  # (M, 2) rows (chosen, rejected)
        self.ref_sums = ref_sums  # (N,) each answer's summed log-prob under the reference


def sequence_logprob(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) log p(answer | prompt): the response tokens' log-probs summed under ``mask``."""
    return (logprobs * mask).sum(-1)


def run(
    config: OnlineDPOConfig,
    inputs: OnlineDPOInputs,
    outputs: ModelOutputs,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    if not config.judge:  # the config checked itself when built
        check_reward_source(inputs.reward_model, config)
    tracker, started, device, ckpt_root, fingerprint, latest, _ = start_training(
        "online_dpo", config, inputs, outputs.model, tracker
    )

    # --- models and data --------------------------------------------------------------------
    loaded = load_policies(inputs.sft_model, config, device)
    tokenizer, policy, sft = loaded.tokenizer, loaded.policy, loaded.reference
    scorer = answer_scorer(inputs.reward_model, config, device)
    gold = load_reward_function(config.gold_reward) if config.gold_reward else None
    prompt_set = load_prompts(inputs.prompts, tokenizer, config)
    engine = build_engine(policy, config.lr, ON_POLICY_WEIGHT_DECAY, config.max_grad_norm,
                          config.distributed, device, decay_matrices_only=False)  # fmt: skip
    sampler = RolloutSampler(engine, tokenizer, config, device)
    K = config.samples_per_prompt

    # --- one round's answers, scores and pairs (the loop runs this under no_grad) ------------
    def rollout(prompt_rows: list[int], iteration: int) -> Experience:
        rows = [i for i in prompt_rows for _ in range(K)]  # group-major: K copies of each
        with engine.gathered():
            sampled = sampler.sample(prompt_set.token_ids(rows))
            args = (sampled.input_ids, sampled.attention_mask, sampled.prompt_width)
            # Temperature 1: DPO's log pi(y|x) is the policy's own, however it sampled.
            logprobs, entropy = response_logprobs(
                policy, *args, with_entropy=True, rows_per_forward=config.scoring_batch_size
            )
        with adapters_disabled(sft):  # under LoRA the SFT model is the policy, adapters off
            sft_logprobs, _ = response_logprobs(
                sft, *args, rows_per_forward=config.scoring_batch_size
            )
        mask = sampled.response_mask.float()
        texts = decode_responses(tokenizer, sampled)
        prompts = prompt_set.messages(rows)
        scores = scorer.score(prompts, texts, sampled.ended)
        pairs = select_pairs(scores.view(-1, K).cpu(), config.pairs).to(device)
        reference = sft_logprobs if config.reference == "sft" else logprobs
        stats = {
            "reward/score_mean": scores.mean().item(),
            "reward/score_std": scores.std().item(),
            "pairs/count": float(len(pairs)),
            # Prompts whose answers all scored the same give no pair: nothing to learn there.
            "pairs/tied_prompts": (scores.view(-1, K).std(dim=1) == 0).float().mean().item(),
            **kl_stats(sequence_kl(kl_penalty(logprobs, sft_logprobs, "k1") * mask, mask)),
            "policy/entropy": masked_mean(entropy, mask).item(),
            "response/length_mean": mask.sum(-1).mean().item(),
            "response/eos_fraction": sampled.ended.float().mean().item(),
        }
        if len(pairs):
            stats["reward/chosen_mean"] = scores[pairs[:, 0]].mean().item()
            stats["reward/rejected_mean"] = scores[pairs[:, 1]].mean().item()
        if gold is not None:
            golds = torch.tensor([gold(p, t) for p, t in zip(prompts, texts, strict=True)])
            stats["gold/mean"] = golds.mean().item()
            if len(pairs):  # how often the scorer's pair order is the gold order
                wins = golds[pairs[:, 0].cpu()] > golds[pairs[:, 1].cpu()]
                stats["gold/pair_accuracy"] = wins.float().mean().item()
        shown = [m[-1]["content"] for m in prompts]
        # Ranks make their own numbers of pairs; one left without any still steps with the
        # others (weight 0) on a row 0: answer 0 against itself.
        held = pairs if len(pairs) else torch.zeros((1, 2), dtype=torch.long, device=device)
        batch = RoundPairs(sampled, held, sequence_logprob(reference, mask))
        return Experience(batch, len(pairs), stats, (shown, texts, scores.tolist()),
                          counts=("pairs/count",))  # fmt: skip

    # --- the loss: DPO on a minibatch of the round's pairs -----------------------------------
    def loss(batch: RoundPairs, mb: torch.Tensor, gradient_step: int):
        pairs = batch.pairs[mb]
        rows = torch.cat([pairs[:, 0], pairs[:, 1]])  # one forward pass over both answers
        sub = batch.rollout.select(rows)
        logprobs, _ = response_logprobs(
            engine.module, sub.input_ids, sub.attention_mask, sub.prompt_width
        )
        sums = sequence_logprob(logprobs, sub.response_mask.float())
        n = len(pairs)
        out = dpo_loss(
            sums[:n], sums[n:], batch.ref_sums[pairs[:, 0]], batch.ref_sums[pairs[:, 1]],
            config.beta, config.loss_type, config.label_smoothing,
        )  # fmt: skip
        return {"policy": out.loss}, {
            "loss/dpo": out.loss.item(),
            "dpo/accuracy": out.accuracy.item(),
            "dpo/margin": out.margins.mean().item(),
            "dpo/chosen_reward": out.chosen_rewards.mean().item(),
            "dpo/rejected_reward": out.rejected_rewards.mean().item(),
        }

    # --- the rounds -------------------------------------------------------------------------
    algorithm = OnPolicyAlgorithm(
        name="online_dpo",
        trained=[Trained("policy", engine, config.lr)],
        prompts_per_iteration=config.prompts_per_iteration,
        epochs=config.dpo_epochs,
        minibatch_size=config.minibatch_size,
        rollout=rollout,
        loss=loss,
        responses_per_prompt=K,
        release=sampler.close,
        sampling_clock=sampler.take_seconds,
    )
    history = train_on_policy(algorithm, config, len(prompt_set), device, tracker, started,
                              ckpt_root, fingerprint, latest)  # fmt: skip

    description = {
        "artifact": "online_dpo_policy",
        "sft_model": inputs.sft_model,
        "reward_model": inputs.reward_model,
        "reward_function": config.reward_function,
        "judge": config.judge,
        "data": inputs.prompts,
        "data_sha256": manifest_checksum(inputs.prompts),
    }
    metrics = result_metrics(history, started)
    metrics["pairs_total"] = sum(h["pairs/count"] for h in history)
    return publish_policy(engine, tokenizer, outputs.model, description, metrics, history,
                          config, ckpt_root, tracker)  # fmt: skip
