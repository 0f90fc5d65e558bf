"""One causal-LM training step through the project's engine, on random tokens: the SFT
stage's loss (``response_nll`` over every token) on ``engine.module``, under the engine's
autocast, then ``engine.backward``. ``engine.step()`` stays the caller's, so it can look at
what a rank holds between the backward pass and the optimizer step."""

from __future__ import annotations

import torch

from rlhf.algorithms.sft_loss import response_nll
from rlhf.training.engine import Engine


def random_tokens(
    generator: torch.Generator, batch: int, length: int, vocab_size: int, device: torch.device
) -> torch.Tensor:
    """(batch, length) token ids drawn uniformly."""
    ids = torch.randint(0, vocab_size, (batch, length), generator=generator)
    return ids.to(device)


def forward_backward(engine: Engine, input_ids: torch.Tensor) -> float:
    """Loss and gradients of one micro-batch, every token counted; returns the loss."""
    mask = torch.ones_like(input_ids)
    with engine.autocast():
        logits = engine.module(input_ids=input_ids, attention_mask=mask).logits
        loss = response_nll(logits, input_ids, mask)
    engine.backward(loss)
    return float(loss.detach())
