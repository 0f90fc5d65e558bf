"""Generalised advantage estimation (Schulman et al. 2016) over response tokens."""

from __future__ import annotations

import torch


@torch.no_grad()
def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets, computed backwards over the response tokens.

    Each response is one episode that ends at its last real token (EOS or truncation), so
    the value after it is bootstrapped as 0, with m_t = mask[:, t] and m_T = 0:

        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
        A_t     = delta_t + gamma * lam * m_{t+1} * A_{t+1}
        R_t     = A_t + V_t   (the lambda-return, the value head's target)

    Runs under ``torch.no_grad()``: advantages and returns are targets, never differentiated
    through. Whitening the advantages is left to the caller (``whiten.masked_whiten``).

    Args:
        rewards: (B, T) per-token rewards (``rewards.token_level_rewards``).
        values: (B, T) value estimates V_t from the rollout.
        mask: (B, T), 1 on real response tokens (contiguous from t=0), 0 on padding.
        gamma: discount.
        lam: GAE lambda (0: one-step TD, 1: Monte-Carlo return minus value).
    Returns:
        (advantages, returns), each (B, T), 0 on padding.
    """
    m = mask.to(values.dtype)
    real = mask.bool()
    # Padding may hold anything (even nan); zero it so it cannot leak through products.
    rewards = torch.where(real, rewards, torch.zeros_like(rewards))
    values = torch.where(real, values, torch.zeros_like(values))
    B, T = values.shape
    advantages = torch.zeros_like(values)
    next_value = values.new_zeros(B)  # V_T: nothing after the last position
    next_adv = values.new_zeros(B)  # A_T
    next_mask = values.new_zeros(B)  # m_T = 0: the episode always ends by T
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        adv = delta + gamma * lam * next_mask * next_adv
        advantages[:, t] = adv
        next_value, next_adv, next_mask = values[:, t], adv, m[:, t]
    returns = advantages + values
    return advantages * m, returns * m
