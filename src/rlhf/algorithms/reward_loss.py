"""Reward-model loss on preference pairs (Bradley-Terry), as in InstructGPT and Llama 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_reward_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """-log sigmoid(s_w - s_l - m), averaged over pairs.

    Args:
        chosen: (B,) scores of the preferred answers s_w.
        rejected: (B,) scores of the other answers s_l.
        margin: optional (B,) m >= 0: how much better the chosen answer is (Llama 2's margin
            term); the loss then asks s_w to exceed s_l by at least about m.
    Returns:
        scalar loss.
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    # logsigmoid is the numerically stable form of log(sigmoid(x)) for large |x|.
    return -F.logsigmoid(diff).mean()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Share of pairs with s_w > s_l. (B,), (B,) -> scalar."""
    return (chosen > rejected).float().mean()
