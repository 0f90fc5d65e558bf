"""Padding token sequences into batch tensors: right for training and scoring, left for
batched generation."""

from __future__ import annotations

import torch

from rlhf.modeling.encoding import Encoded


def pad_right(seqs: list[list[int]], value: int) -> torch.Tensor:
    """(B, longest) LongTensor of ``seqs`` padded on the right with ``value``."""
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def pad_left(seqs: list[list[int]], value: int) -> torch.Tensor:
    """(B, longest) LongTensor padded on the left: prompts for batched generation end
    together, so every new token is appended at the same position."""
    width = max(len(s) for s in seqs)
    return torch.tensor([[value] * (width - len(s)) + s for s in seqs], dtype=torch.long)


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its own longest sequence."""
    ids = pad_right([e.input_ids for e in examples], pad_id)
    attention = pad_right([[1] * len(e) for e in examples], 0)
    loss_mask = pad_right([e.loss_mask for e in examples], 0)
    return {"input_ids": ids, "attention_mask": attention, "loss_mask": loss_mask}
