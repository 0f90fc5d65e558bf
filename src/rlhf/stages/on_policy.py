"""What the on-policy RL stages (PPO and GRPO) share around their updates: loading the policy
and its frozen reference, encoding the prompts, scoring sampled responses, the guards for
known failure modes, per-iteration logging, and the result metrics. Each stage keeps only its
own algorithm: PPO its critic and GAE, GRPO its groups."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.config import OnPolicyConfig
from rlhf.data.artifacts import load_split
from rlhf.gold import load_reward_function
from rlhf.modeling import models
from rlhf.modeling.encoding import Messages, encode_prompt
from rlhf.modeling.reward_scoring import RewardScorer
from rlhf.tracking import Tracker

HISTORY_FILE = "training_history.json"  # per-iteration metrics, read by the evaluation report
NEGATIVE_KL_TOLERANCE = 0.01  # nats per response: below -this the negative-KL guard fires


@dataclass
class Policies:
    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel  # trained, starts from the SFT model
    reference: PreTrainedModel  # frozen SFT model


def load_policies(sft_model: str, config: OnPolicyConfig, device: torch.device) -> Policies:
    tokenizer = models.load_tokenizer(sft_model, config.trust_remote_code)
    policy = models.load_causal_lm(sft_model, config.dtype, config.trust_remote_code)
    reference = models.load_causal_lm(sft_model, config.dtype, config.trust_remote_code)
    reference.requires_grad_(False).eval()
    policy.to(device)
    reference.to(device)
    policy.config.use_cache = True  # generation reuses the KV cache
    return Policies(tokenizer, policy, reference)


def load_prompts(
    uri: str, tokenizer: PreTrainedTokenizerBase, config: OnPolicyConfig
) -> tuple[list[Messages], list[list[int]]]:
    """The prompts artifact's train split: messages, and token ids cut from the left to
    ``max_prompt_length``."""
    messages = [r["prompt"] for r in load_split(uri, "train")]
    ids = [
        encode_prompt(tokenizer, m, config.chat_template)[-config.max_prompt_length :]
        for m in messages
    ]
    return messages, ids


class ResponseRewards:
    """Scores sampled responses: the reward model, or the programmatic ``reward_function``
    when one is configured, plus ``missing_eos_penalty`` for responses cut off at the length
    limit. The programmatic ``gold_reward`` is only ever logged."""

    def __init__(self, reward_model: str | None, config: OnPolicyConfig) -> None:
        self.penalty = config.missing_eos_penalty
        self.function = (
            load_reward_function(config.reward_function) if config.reward_function else None
        )
        if self.function is None and not reward_model:
            raise ValueError("needs a reward model, or reward_function set to 'module:function'")
        self.scorer = (
            RewardScorer.load(reward_model, config.device, config.dtype)
            if self.function is None and reward_model
            else None
        )
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


class Guards:
    """Warn about (and record as ``guard/*`` metrics) the known failure modes of RL on
    language models: a negative KL estimate, entropy collapse and length drift. Training goes
    on; the warnings say what to look at."""

    def __init__(self, stage: str, config: OnPolicyConfig) -> None:
        self.log = logging.getLogger(f"rlhf.{stage}")
        self.stage = stage
        self.entropy_floor = config.entropy_floor
        self.length_drift = config.length_drift
        self.first_length: float | None = None

    def check(self, stats: dict[str, float], step: int) -> None:
        """Add ``guard/negative_kl``, ``guard/entropy_collapse`` and ``guard/length_drift``
        (1.0 when it fired) to ``stats``, which must hold ``kl/mean``, ``policy/entropy`` and
        ``response/length_mean``."""
        if self.first_length is None:
            self.first_length = stats["response/length_mean"]
        # A small negative k1 mean is sampling noise; a clearly negative one is not.
        stats["guard/negative_kl"] = float(stats["kl/mean"] < -NEGATIVE_KL_TOLERANCE)
        if stats["guard/negative_kl"]:
            self.log.warning(
                "%s iteration %d: mean KL to the reference is negative (%.3f): with the k1 "
                "estimator this means sampling does not match the log-probs (temperature, "
                "top-p) or a bug", self.stage, step, stats["kl/mean"],
            )  # fmt: skip
        stats["guard/entropy_collapse"] = float(stats["policy/entropy"] < self.entropy_floor)
        if stats["guard/entropy_collapse"]:
            self.log.warning(
                "%s iteration %d: policy entropy %.4f is below %.4f: the policy is collapsing",
                self.stage, step, stats["policy/entropy"], self.entropy_floor,
            )  # fmt: skip
        ratio = stats["response/length_mean"] / max(self.first_length, 1e-6)
        stats["guard/length_drift"] = float(
            ratio > self.length_drift or ratio < 1 / self.length_drift
        )
        if stats["guard/length_drift"]:
            self.log.warning(
                "%s iteration %d: mean response length %.1f drifted from %.1f at the start",
                self.stage, step, stats["response/length_mean"], self.first_length,
            )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"first_length": self.first_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first_length = state["first_length"]


def log_iteration(
    tracker: Tracker,
    config: OnPolicyConfig,
    stage: str,
    step: int,
    stats: dict[str, float],
    started: float,
    samples: tuple[list[str], list[str], list[float]],
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
