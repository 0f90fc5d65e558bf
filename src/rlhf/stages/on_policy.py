"""What the on-policy RL stages (PPO and GRPO) share around the loop
(``training/on_policy_loop.py``): loading the policy and its frozen reference, encoding the
prompts, scoring sampled responses, and publishing the trained policy. Each stage keeps only
its own algorithm: PPO its critic and GAE, GRPO its groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.config import OnPolicyConfig
from rlhf.data.artifacts import load_split
from rlhf.gold import load_reward_function
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Messages, encode_prompt
from rlhf.modeling.packed import PackedIds
from rlhf.modeling.reward_scoring import RewardScorer
from rlhf.stages.publish import finish_training, publish_trained
from rlhf.tracking import Tracker
from rlhf.training.engine import Engine, frozen, sharded_loading

# AdamW's weight decay for the on-policy stages' models: torch's default, on every weight (the
# supervised stages decay weight matrices only); the documented PPO/GRPO results used it.
ON_POLICY_WEIGHT_DECAY = 0.01

HISTORY_FILE = "training_history.json"  # per-iteration metrics, read by the evaluation report


@dataclass
class Policies:
    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel  # trained, starts from the SFT model
    # The frozen SFT model; under LoRA the policy itself. Run it inside
    # ``lora.adapters_disabled(reference)``: the base model then, whichever it is.
    reference: PreTrainedModel


def load_policies(sft_model: str, config: OnPolicyConfig, device: torch.device) -> Policies:
    """The policy (on ``device``, for its engine) and its frozen reference (sharded under
    ZeRO-3 like every model, else a whole copy on ``device``)."""
    tokenizer = models.load_tokenizer(sft_model, config.trust_remote_code)
    with sharded_loading(config.distributed):
        policy = models.load_causal_lm(
            sft_model, config.dtype, config.trust_remote_code,
            lora.quantization_config(config.lora, config.dtype),
        )  # fmt: skip
        if config.lora.r:  # no second copy: the reference is the policy with adapters disabled
            policy = reference = lora.apply_lora(policy, config.lora)
        else:
            reference = models.load_causal_lm(sft_model, config.dtype, config.trust_remote_code)
            reference = frozen(reference, config.distributed, device, "reference")
    policy.to(device)
    policy.config.use_cache = True  # generation reuses the KV cache
    return Policies(tokenizer, policy, reference)


@dataclass
class PromptSet:
    """The prompts artifact's train split as the on-policy loop draws from it: the messages
    stay in the Arrow dataset (memory-mapped, read per batch) and the token ids are packed, so
    memory grows by 4 bytes a prompt token, not by a Python object per message and token."""

    rows: datasets.Dataset  # the split, column "prompt"
    ids: PackedIds  # prompt token ids, cut from the left to max_prompt_length

    def __len__(self) -> int:
        return len(self.ids)

    def messages(self, rows: list[int]) -> list[Messages]:
        return self.rows[rows]["prompt"] if rows else []

    def token_ids(self, rows: list[int]) -> list[list[int]]:
        return [self.ids[i] for i in rows]


def load_prompts(uri: str, tokenizer: PreTrainedTokenizerBase, config: OnPolicyConfig) -> PromptSet:
    """The prompts artifact's train split, encoded."""
    rows = load_split(uri, "train").select_columns(["prompt"])
    ids = PackedIds(
        encode_prompt(tokenizer, r["prompt"], config.chat_template)[-config.max_prompt_length :]
        for r in rows
    )
    return PromptSet(rows, ids)


def check_reward_source(reward_model: str | None, config: OnPolicyConfig) -> None:
    """Responses need a scorer: the reward model, or ``reward_function``. Checked before any
    model loads."""
    if not config.reward_function and not reward_model:
        raise ValueError("needs a reward model, or reward_function set to 'module:function'")


class ResponseRewards:
    """Scores sampled responses: the reward model, or the programmatic ``reward_function``
    when one is configured, plus ``missing_eos_penalty`` for responses cut off at the length
    limit. The programmatic ``gold_reward`` is only ever logged."""

    def __init__(
        self, reward_model: str | None, config: OnPolicyConfig, device: torch.device
    ) -> None:
        self.penalty = config.missing_eos_penalty
        self.function = (
            load_reward_function(config.reward_function) if config.reward_function else None
        )
        check_reward_source(reward_model, config)
        self.scorer = None
        if self.function is None and reward_model:
            with sharded_loading(config.distributed):
                self.scorer = RewardScorer.load(
                    reward_model, str(device), config.dtype,
                    place=lambda model: frozen(model, config.distributed, device, "reward model"),
                )  # fmt: skip
        self.gold = load_reward_function(config.gold_reward) if config.gold_reward else None

    def score(self, prompts: list[Messages], texts: list[str], ended: torch.Tensor) -> torch.Tensor:
        """(B,) scores on ``ended``'s device."""
        if self.scorer is not None:
            raw = self.scorer.score(prompts, texts).to(ended.device)
        else:
            assert self.function is not None
            values = [self.function(p, t) for p, t in zip(prompts, texts, strict=True)]
            raw = torch.tensor(values, dtype=torch.float32, device=ended.device)
        # A response cut off at max_new_tokens is not an answer; make that visible in reward.
        return raw + self.penalty * (~ended).float()

    def gold_mean(self, prompts: list[Messages], texts: list[str]) -> float | None:
        if self.gold is None:
            return None
        golds = [self.gold(p, t) for p, t in zip(prompts, texts, strict=True)]
        return sum(golds) / len(golds)


def publish_policy(
    policy: Engine,
    tokenizer: PreTrainedTokenizerBase,
    output: str,
    description: dict[str, Any],  # what it was trained from: "sft_model" names its base
    metrics: dict[str, float],
    history: list[dict[str, float]],
    config: OnPolicyConfig,
    checkpoint_root: Path,
    tracker: Tracker,
) -> dict[str, float]:
    """Publish the trained policy to ``output`` with its ``description`` (what it was trained
    from), ``metrics`` and the training history; then drop the checkpoints (unless they live in
    a configured ``checkpoint_dir``) and log the metrics as ``final/*``. Returns ``metrics``."""
    publish_trained(
        policy,
        tokenizer,
        output,
        lora_config=config.lora,
        lora_base=description["sft_model"],
        manifest={**description, "metrics": metrics},
        tracker=tracker,
        extra_files={HISTORY_FILE: history},
        log_artifacts=config.log_model_artifacts,
        publish_to=config.publish_to,
    )
    finish_training(metrics, checkpoint_root, config.checkpoint_dir, tracker)
    return metrics
