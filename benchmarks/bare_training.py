"""Pieces of the bare PyTorch loops of the side-by-side benchmarks: the limit on a CPU, the
same arithmetic as the stage with nothing around it (no engine, no tracker, no guards)."""

from __future__ import annotations

import torch
from bench_time import now


def adamw(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                             weight_decay=0.01)  # fmt: skip


def step(models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer]) -> float:
    """Clip each model's gradients to norm 1, step, zero them; returns when it finished."""
    for model, optimizer in zip(models, optimizers, strict=True):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return now()


def pad_right(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs])


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1) log-probabilities of ``ids[:, 1:]`` under ``logits[:, :-1]``."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
