"""PPO losses for language-model policies and value heads, per token (Schulman et al. 2017;
the details follow CleanRL's ppo.py and OpenAI's lm-human-preferences / TRL).

All tensors are (B, T) over response tokens; ``mask`` is 1 on real tokens. Losses are
means over every masked token in the batch. Stats are detached Python floats for logging.
"""

from __future__ import annotations

import math

import torch

from rlhf.algorithms.masked import masked_mean


def _log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    # log(pi_theta / pi_old); old_logprobs come from the rollout and carry no gradient.
    return logprobs - old_logprobs.detach()


def ppo_clip_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-Clip: minimise masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))),
    the negated min(ratio * A, clip(ratio) * A) objective.

    Args:
        logprobs: (B, T) log pi_theta of the sampled tokens (with gradient).
        old_logprobs: (B, T) log pi_old of the same tokens, from the rollout.
        advantages: (B, T), usually whitened.
        mask: (B, T).
        clip_eps: epsilon of the clip range.
    Returns:
        (loss, stats): scalar loss and
        - ``clip_fraction``: share of masked tokens where the clipped term is the active one,
          i.e. -A * clip(ratio) > -A * ratio strictly (so ratio outside the range *and* on
          the side the advantage pushes; CleanRL's |ratio - 1| > eps counts both sides),
        - ``approx_kl``: masked_mean(0.5 * (logp - old_logp)^2), the k2 estimate of
          KL(pi_old || pi_theta) logged by lm-human-preferences and TRL (CleanRL logs k3),
        - ``ratio_mean``: masked mean of the probability ratio.
    """
    advantages = advantages.detach()
    log_ratio = _log_ratio(logprobs, old_logprobs)
    ratio = torch.exp(log_ratio)
    # Negated because optimisers minimise; max of negatives = min of the objectives.
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((pg_losses_clipped > pg_losses).float(), mask).item(),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def ppo_penalty_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-Penalty (the PPO paper's L^KLPEN): minimise
    masked_mean(-ratio * A) + beta * KL(pi_old || pi_theta).

    The tokens were sampled from pi_old, so KL(pi_old || pi_theta) is estimated per token
    with Schulman's k3 for samples of pi_old, with r = pi_theta / pi_old = ratio:
    k3 = (r - 1) - log r >= 0. Its gradient is, in expectation, the gradient of the true KL
    (E_old[grad r] = grad sum pi_theta = 0, and -E_old[grad log pi_theta] is grad KL).
    beta is adapted between updates by ``kl_control.AdaptivePenaltyCoef``.

    Args:
        logprobs, old_logprobs, advantages, mask: as in ``ppo_clip_policy_loss``.
        beta: the penalty coefficient.
    Returns:
        (loss, stats): ``kl_old_new`` (masked mean of k3), ``approx_kl`` (k2, as in
        ``ppo_clip_policy_loss`` so the two variants log comparable numbers), ``ratio_mean``.
    """
    advantages = advantages.detach()
    log_ratio = _log_ratio(logprobs, old_logprobs)
    ratio = torch.exp(log_ratio)
    surrogate = masked_mean(-ratio * advantages, mask)
    # k3 = (r - 1) - log r, with expm1 for precision near r = 1.
    kl_old_new = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    loss = surrogate + beta * kl_old_new
    with torch.no_grad():
        stats = {
            "kl_old_new": kl_old_new.item(),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """0.5 * masked_mean(max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)).

    The value prediction may move at most c from the rollout's value before the clipped
    term takes over (CleanRL's ``clip_vloss``; the 0.5 is CleanRL's too). With
    ``clip_range`` None or <= 0 it is plain 0.5 * masked_mean((V - R)^2).

    Args:
        values: (B, T) current value predictions (with gradient).
        old_values: (B, T) value predictions from the rollout.
        returns: (B, T) targets (``gae.gae_advantages``).
        mask: (B, T).
        clip_range: c, or None / <= 0 for no clipping.
    Returns:
        (loss, stats): ``value_clip_fraction``, share of masked tokens where the clipped
        error is the larger (active) one; 0.0 when clipping is off.
    """
    returns = returns.detach()
    losses = (values - returns) ** 2
    if clip_range is None or clip_range <= 0:
        return 0.5 * masked_mean(losses, mask), {"value_clip_fraction": 0.0}
    old_values = old_values.detach()
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(losses, losses_clipped), mask)
    with torch.no_grad():
        frac = masked_mean((losses_clipped > losses).float(), mask).item()
    return loss, {"value_clip_fraction": frac}


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over the masked entries (population variances).

    1 is a perfect value head, 0 one no better than a constant, negative worse than that.
    Returns nan when Var[R] == 0 (nothing to explain), as CleanRL does.

    Args:
        values, returns, mask: (B, T).
    """

    def var(x: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(x, mask)
        return masked_mean((x - mean) ** 2, mask)

    var_returns = var(returns).item()
    if var_returns == 0:
        return math.nan
    return 1.0 - var(returns - values).item() / var_returns
