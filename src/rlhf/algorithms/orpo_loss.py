"""ORPO (Hong et al. 2024): supervised fine-tuning and preference alignment in one loss, with
no reference model. The NLL of the chosen answer plus lambda times a log-odds-ratio term that
favours the chosen answer's odds over the rejected one's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.algorithms.dpo_loss import DPOOutput
from rlhf.algorithms.simpo_loss import average_logprobs


def log_odds(mean_logprob: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) with log p = ``mean_logprob`` (B,), the per-token mean log-prob of an
    answer (ORPO's length-normalised P(y|x)). log(1 - p) = log(-expm1(log p)) keeps precision
    for p near 1; log p is capped just below 0 so that p = 1 gives a large finite value."""
    logp = mean_logprob.clamp(max=-1e-6)
    return logp - torch.log(-torch.expm1(logp))


def orpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    orpo_lambda: float,
) -> DPOOutput:
    """NLL(y_w) + lambda * -log sigmoid(log odds(y_w) - log odds(y_l)), per pair.

    NLL(y_w) = -log pi(y_w|x) / |y_w|, the chosen answer's mean token NLL (SFT's loss on it);
    the odds use the same per-token mean log-probs.

    Args:
        policy_chosen, policy_rejected: (B,) summed answer log-probs under the policy.
        chosen_tokens, rejected_tokens: (B,) answer token counts.
        orpo_lambda: weight of the odds-ratio term (the paper's lambda, 0.1 by default there).
    Returns:
        ``DPOOutput``; its "rewards" are the answers' log odds, so the margin is the log odds
        ratio and the accuracy the share of pairs where the chosen answer has the higher odds.
    """
    if orpo_lambda < 0:
        raise ValueError(f"orpo_lambda must be >= 0, got {orpo_lambda}")
    chosen_mean = average_logprobs(policy_chosen, chosen_tokens)
    rejected_mean = average_logprobs(policy_rejected, rejected_tokens)
    chosen_odds, rejected_odds = log_odds(chosen_mean), log_odds(rejected_mean)
    losses = -chosen_mean - orpo_lambda * F.logsigmoid(chosen_odds - rejected_odds)
    return DPOOutput(losses.mean(), losses.detach(), chosen_odds.detach(), rejected_odds.detach())
