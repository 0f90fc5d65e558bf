"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath): no critic; each
response's advantage is its reward relative to the other responses to the same prompt.

Responses are laid out group-major: rows ``g * G .. g * G + G - 1`` answer prompt g.
"""

from __future__ import annotations

import torch

from rlhf.algorithms.kl import kl_penalty
from rlhf.algorithms.masked import masked_mean
from rlhf.algorithms.ppo_loss import ppo_clip_policy_loss


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """A_i = (r_i - mean(group)) / (std(group) + eps), the same for every token of response i.

    ``std`` is the sample standard deviation (divides by G - 1), as in DeepSeekMath's and
    TRL's GRPO. A group whose rewards are all equal carries no signal: its advantages are 0.
    With ``scale=False`` only the mean is subtracted (Dr. GRPO, Liu et al. 2025: dividing by
    the std up-weights groups that are nearly all right or all wrong).

    Args:
        rewards: (N * G,) one scalar reward per response, group-major.
        group_size: G >= 2.
        scale: divide by the group's std.
        eps: keeps the division finite when a group's rewards are all equal.
    Returns:
        (N * G,) advantages.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (advantages are relative), got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.flatten()


def grpo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-Clip with sequence advantages, plus ``kl_coef`` x KL(pi || ref) in the loss
    (GRPO puts the KL in the loss, not in the reward as PPO-RLHF does).

    loss = masked_mean(max(-A * ratio, -A * clip(ratio))) + kl_coef * masked_mean(k3), with
    k3 = ref / pi - 1 - log(ref / pi) per token (``kl.kl_penalty(..., "k3")``), unbiased for
    tokens sampled from pi and never negative. Both means run over every response token of
    the batch (token-level normalisation, as DAPO and TRL do), so long responses are not
    down-weighted per token.

    Args:
        logprobs: (B, T) log pi_theta of the sampled tokens (with gradient).
        old_logprobs: (B, T) log pi_old from the rollout.
        ref_logprobs: (B, T) log pi_ref of the same tokens.
        advantages: (B,) one advantage per response (``group_advantages``, ``rloo``), or
            (B, T) one per token (``reinforce_pp``).
        mask: (B, T), 1 on response tokens.
        clip_eps: PPO-Clip's epsilon.
        kl_coef: weight of the KL term (0: no reference needed for the loss).
    Returns:
        (loss, stats): the ``ppo_clip_policy_loss`` stats plus ``kl_ref`` (masked mean of k3).
    """
    per_token = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
    per_token = per_token.expand_as(logprobs)
    loss, stats = ppo_clip_policy_loss(logprobs, old_logprobs, per_token, mask, clip_eps)
    kl = masked_mean(kl_penalty(logprobs, ref_logprobs.detach(), "k3"), mask)
    stats["kl_ref"] = kl.item()
    if kl_coef:
        loss = loss + kl_coef * kl
    return loss, stats
