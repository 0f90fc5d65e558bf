"""SimPO (Meng et al. 2024): a reference-free member of the DPO family. The implicit reward of
an answer is its length-normalised log-prob, beta * log pi(y|x) / |y|, and the loss asks the
chosen answer's reward to beat the rejected one's by a margin gamma. No reference model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.algorithms.dpo_loss import DPOOutput


def average_logprobs(summed: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B,) mean log-prob per answer token: ``summed`` (B,) log pi(y|x) over ``tokens`` (B,)
    answer token counts (an answer with no token counts as one, so the mean stays finite)."""
    return summed / tokens.to(summed.dtype).clamp(min=1.0)


def simpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
) -> DPOOutput:
    """-log sigmoid(beta * avg_w - beta * avg_l - gamma), with avg = log pi(y|x) / |y|.

    Args:
        policy_chosen, policy_rejected: (B,) summed answer log-probs under the policy.
        chosen_tokens, rejected_tokens: (B,) answer token counts |y_w|, |y_l|.
        beta: scale of the reward (SimPO's paper uses 2 to 2.5 on its chat models).
        gamma: target margin between the two rewards (>= 0; the paper's gamma / beta is
            about 0.5).
    Returns:
        ``DPOOutput``; its rewards are beta * avg (no reference: not a log-ratio).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    chosen = beta * average_logprobs(policy_chosen, chosen_tokens)
    rejected = beta * average_logprobs(policy_rejected, rejected_tokens)
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return DPOOutput(losses.mean(), losses.detach(), chosen.detach(), rejected.detach())
