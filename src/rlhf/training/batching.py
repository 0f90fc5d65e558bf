"""Batching: length-grouped batches (similar lengths share a batch, so padding stays small
without padding everything to a global maximum) and right-padding them into tensors."""

from __future__ import annotations

import random

import torch

from rlhf.encoding import Encoded


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 50
) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches of similar length, in an order fixed by
    ``(seed, epoch)`` (so a resumed run sees the same batches).

    The data is shuffled, cut into chunks of ``group * batch_size``, each chunk sorted by
    length and cut into batches; then the batch order is shuffled. Sorting only within a chunk
    keeps batches random enough for SGD while cutting most of the padding."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    chunk = group * batch_size
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


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
