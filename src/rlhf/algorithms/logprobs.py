"""Log-probabilities of the tokens a causal LM was given: the one implementation that SFT,
reward scoring, PPO, DPO, GRPO and evaluation all use."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every position.

    Args:
        logits: (B, T, V) model outputs for ``input_ids``.
        input_ids: (B, T).
    Returns:
        (B, T-1): entry t is the log-prob of token t+1 (the first token has no prediction).
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:].unsqueeze(-1)
    # log_softmax then gather; logsumexp-based form keeps memory at (B, T, V) once.
    return torch.gather(F.log_softmax(logits, dim=-1), -1, targets).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution. logits (B, T, V) -> (B, T-1), aligned with
    ``token_logprobs``."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
