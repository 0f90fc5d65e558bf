"""Supervised fine-tuning loss: cross-entropy on response tokens only."""

from __future__ import annotations

import torch

from rlhf.algorithms.logprobs import token_logprobs
from rlhf.algorithms.masked import masked_mean


def response_nll(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """Mean negative log-likelihood of the tokens ``loss_mask`` marks (the responses).

    Args:
        logits: (B, T, V) for ``input_ids``.
        input_ids: (B, T).
        loss_mask: (B, T), 1 on response tokens (the prompt and padding are 0).
    Returns:
        scalar: averaged over every counted token in the batch, so long and short responses
        weigh per token, as in the InstructGPT SFT objective.
    """
    return -masked_mean(token_logprobs(logits, input_ids), loss_mask[:, 1:])
