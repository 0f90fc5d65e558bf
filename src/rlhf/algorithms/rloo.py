"""RLOO, REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024): each of the G
responses to a prompt is baselined by the mean reward of the other G - 1, an unbiased
baseline that needs no critic.

Responses are laid out group-major: rows ``g * G .. g * G + G - 1`` answer prompt g.
"""

from __future__ import annotations

import torch


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean(group)).

    Args:
        rewards: (N * G,) one scalar reward per response, group-major.
        group_size: G >= 2 (a leave-one-out mean needs another response).
    Returns:
        (N * G,) advantages; a group whose rewards are all equal gets 0.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (leave-one-out needs 2), got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).flatten()
