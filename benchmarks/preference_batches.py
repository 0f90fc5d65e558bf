"""The preference pairs the reward-model and DPO benchmarks train on, encoded as the stages
encode them, in the stages' length-grouped batch order: for the bare loops (one padded batch
of the chosen then the rejected answers per step) and the pair count and mean tokens for all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from bare_training import pad_right
from bench_inputs import Inputs

from rlhf.data.artifacts import load_split
from rlhf.modeling import models
from rlhf.modeling.encoding import Encoded
from rlhf.training.batching import length_grouped_batches

Encode = Callable[[Any, dict[str, Any], str, int], Encoded]  # tokenizer, row, answer, max length


def encoded_pairs(inputs: Inputs, encode: Encode) -> list[tuple[Encoded, Encoded]]:
    tokenizer = models.load_tokenizer(inputs.model)
    return [
        (encode(tokenizer, r, r["chosen"], inputs.settings.max_length),
         encode(tokenizer, r, r["rejected"], inputs.settings.max_length))
        for r in load_split(inputs.preferences, "train")
    ]  # fmt: skip


def measured(inputs: Inputs, encode: Encode, seconds: float) -> dict[str, Any]:
    """Pairs of the timed steps (all but the first), and their tokens at the split's mean."""
    pairs = encoded_pairs(inputs, encode)
    mean_tokens = sum(len(c) + len(r) for c, r in pairs) / len(pairs)
    count = (inputs.settings.steps - 1) * inputs.settings.batch
    return {"seconds": seconds, "units": count, "unit": "pairs", "tokens": count * mean_tokens}


def bare_batches(inputs: Inputs, encode: Encode) -> list[tuple[torch.Tensor, ...]]:
    """Per step: ids, attention mask and answer mask of the (2B, T) batch, chosen first."""
    s = inputs.settings
    pad = models.load_tokenizer(inputs.model).pad_token_id
    pairs = encoded_pairs(inputs, encode)
    lengths = [max(len(c), len(r)) for c, r in pairs]
    out = []
    for group in length_grouped_batches(lengths, s.batch, s.seed, 0)[: s.steps]:
        rows = [pairs[i][0] for i in group] + [pairs[i][1] for i in group]
        out.append((pad_right([e.input_ids for e in rows], pad),
                    pad_right([[1] * len(e) for e in rows], 0),
                    pad_right([e.loss_mask for e in rows], 0)))  # fmt: skip
    return out
