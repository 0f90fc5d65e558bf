"""Per-token estimates of KL(pi || ref) from tokens sampled from pi (the KL penalty of
RLHF: r = r_theta - lambda * r_KL), after Schulman, "Approximating KL divergence" (2020),
http://joschu.net/blog/kl-approx.html."""

from __future__ import annotations

import torch

from rlhf.algorithms.masked import masked_sum
from rlhf.config import KL_ESTIMATORS


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) for tokens that were sampled from pi.

    With log r = logref - logp (r = ref(x) / pi(x)):

    - ``"k1"``: logp - logref = -log r. Unbiased, but single samples can be negative; the
      estimator InstructGPT and most RLHF code use for the reward penalty.
    - ``"k2"``: 0.5 * (logp - logref)^2. Always >= 0, biased, low variance.
    - ``"k3"``: (r - 1) - log r = (exp(logref - logp) - 1) - (logref - logp). Unbiased and
      always >= 0 (since exp(x) >= 1 + x), Schulman's recommended estimator.

    Args:
        logprobs: (B, T) log pi of the sampled response tokens.
        ref_logprobs: (B, T) log ref of the same tokens.
        estimator: one of ``KL_ESTIMATORS``.
    Returns:
        (B, T) per-token estimates; padding is not masked here (see ``sequence_kl``).
    """
    log_ratio = logprobs - ref_logprobs  # log pi - log ref = -log r
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        # (r - 1) - log r with log r = -log_ratio; expm1 keeps precision when r is near 1.
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; known: {', '.join(KL_ESTIMATORS)}")


def sequence_kl(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL of each whole response: the per-token estimates summed over its real tokens.

    Args:
        per_token: (B, T) from ``kl_penalty``.
        mask: (B, T), 1 on response tokens.
    Returns:
        (B,).
    """
    return masked_sum(per_token, mask.to(per_token.dtype), dim=1)
