"""REINFORCE++ (Hu 2025): critic-free like GRPO, but with PPO-RLHF's reward shaping. The KL
penalty is in the reward, per token; each token's advantage is its return (the sum of the
rewards from it to the end of the response), normalised over every response token of the
whole batch rather than within a prompt's group."""

from __future__ import annotations

import torch

from rlhf.algorithms.rewards import token_level_rewards
from rlhf.algorithms.whiten import masked_whiten


def reverse_cumsum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) undiscounted returns G_t = sum_{s >= t} values_s over the masked tokens; 0 on
    padding."""
    masked = values * mask.to(values.dtype)
    return masked.flip(dims=[1]).cumsum(dim=1).flip(dims=[1]) * mask.to(values.dtype)


def reinforce_pp_advantages(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Token advantages: whiten_batch(G_t), with r_t = -kl_coef * kl_t on every response token
    plus the score on the last one (``rewards.token_level_rewards``) and G_t its return.

    Args:
        scores: (B,) one reward per response.
        kl: (B, T) per-token KL estimate of the rollout (k1: log pi_old - log ref).
        mask: (B, T), 1 on response tokens.
        kl_coef: the penalty's coefficient.
    Returns:
        (B, T) advantages: mean 0, variance 1 over the batch's response tokens; 0 on padding.
    """
    returns = reverse_cumsum(token_level_rewards(scores, kl, mask, kl_coef), mask)
    return masked_whiten(returns, mask)
