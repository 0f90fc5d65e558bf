"""KTO (Ethayarajh et al. 2024, "Model Alignment as Prospect Theoretic Optimization"): learns
from unpaired feedback, each answer labelled desirable or undesirable on its own.

The implicit reward of an answer is r = log pi(y|x) - log ref(y|x) (summed over its tokens).
Prospect theory's reference point z0 is the policy's KL from the reference, estimated from
mismatched pairs in the batch (prompt x_i with another row's answer y_j, which the policy has
no reason to favour), clamped at 0 and treated as a constant. A desirable answer's loss falls
as beta * (r - z0) rises; an undesirable one's as beta * (z0 - r) rises."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KTOOutput:
    """``loss`` is the batch mean (with gradient); the rest are detached."""

    loss: torch.Tensor
    losses: torch.Tensor  # (B,) weighted, per example
    rewards: torch.Tensor  # (B,) log pi(y|x) - log ref(y|x)
    kl: torch.Tensor  # scalar z0, the reference point

    def accuracy(self, desirable: torch.Tensor) -> torch.Tensor:
        """Share of examples on the side of z0 their label asks for (r > z0 for desirable,
        r < z0 for undesirable)."""
        above = self.rewards > self.kl
        return (above == desirable.bool()).float().mean()


def kto_kl_estimate(policy_mismatched: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean_j (log pi(y_j|x_i) - log ref(y_j|x_i))) over mismatched pairs (M,),
    detached: the reference point moves with the policy but is not trained through."""
    return (policy_mismatched - ref_mismatched).mean().clamp(min=0).detach()


def kto_loss(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOOutput:
    """Per example, with r = policy - ref:

    - desirable: desirable_weight * (1 - sigmoid(beta * (r - z0)))
    - undesirable: undesirable_weight * (1 - sigmoid(beta * (z0 - r)))

    and the loss is their mean over the batch. The paper advises weights with
    desirable_weight * n_desirable / (undesirable_weight * n_undesirable) in [1, 4/3].

    Args:
        policy_logprobs: (B,) summed answer log-probs under the policy (with gradient).
        ref_logprobs: (B,) the same under the frozen reference.
        desirable: (B,) bool, the label of each answer.
        kl: scalar z0 (``kto_kl_estimate``).
        beta: how sharply the value saturates around z0 (larger: stay nearer the reference).
        desirable_weight, undesirable_weight: lambda_D and lambda_U.
    Returns:
        ``KTOOutput``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError("desirable_weight and undesirable_weight must be >= 0")
    rewards = policy_logprobs - ref_logprobs.detach()
    good = desirable.bool()
    z0 = kl.detach()
    value = torch.where(good, torch.sigmoid(beta * (rewards - z0)),
                        torch.sigmoid(beta * (z0 - rewards)))  # fmt: skip
    weights = torch.where(
        good,
        torch.full_like(rewards, desirable_weight),
        torch.full_like(rewards, undesirable_weight),
    )
    losses = weights * (1.0 - value)
    return KTOOutput(losses.mean(), losses.detach(), rewards.detach(), z0)
