"""Model forward passes over padded batches: per-token log-probs, entropies and values, and
the held-out NLL of encoded conversations.

The single place where a model is run on a (prompt, response) batch, used by PPO, GRPO, DPO,
SFT validation and evaluation. Position ids come from the attention mask, so a left-padded prompt (as batched
generation needs) gets the same positions at scoring time as it had during generation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from rlhf.algorithms.logprobs import token_entropy, token_logprobs
from rlhf.modeling import lora
from rlhf.modeling.encoding import Encoded
from rlhf.modeling.padding import collate


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counting real tokens only: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def sequence_logits(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T, V) logits of a causal LM for a padded batch (left or right padding)."""
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
    ).logits


def _row_chunks(rows: int, rows_per_forward: int | None) -> list[slice]:
    """The row ranges of a batch of ``rows`` scored ``rows_per_forward`` at a time (one range
    when that is None or the batch is no larger)."""
    if rows_per_forward is None or rows <= rows_per_forward:
        return [slice(0, rows)]
    return [slice(i, i + rows_per_forward) for i in range(0, rows, rows_per_forward)]


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The chunks' results in row order (a single chunk's as it is: no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def response_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    rows_per_forward: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and optionally entropies) of the response tokens.

    Args:
        input_ids, attention_mask: (B, P + R): prompts left-padded to width P, then responses.
        prompt_width: P.
        temperature: divides the logits, so the log-probs are those of the distribution the
            responses were sampled from.
        rows_per_forward: at most this many rows per forward pass, whose logits are
            (rows, P + R, V); None: all B at once. Other matmul shapes: the results may differ
            from one forward's in the last bits.
    Returns:
        logprobs (B, R) and entropy (B, R) or None.
    """
    logprobs, entropies = [], []
    for rows in _row_chunks(len(input_ids), rows_per_forward):
        logits = sequence_logits(model, input_ids[rows], attention_mask[rows])
        logits = logits[:, prompt_width - 1 :] / temperature  # positions that predict responses
        logprobs.append(token_logprobs(logits, input_ids[rows, prompt_width - 1 :]))
        if with_entropy:
            entropies.append(token_entropy(logits))
    return _joined(logprobs), _joined(entropies) if with_entropy else None


class TokenValues(torch.nn.Module):
    """A sequence-classification critic (backbone + ``score`` head) read at every position:
    ``forward(input_ids, attention_mask)`` -> (B, T) values. One module call, so that a
    DistributedDataParallel or DeepSpeed wrapper around it sees the whole forward pass."""

    def __init__(self, critic: PreTrainedModel) -> None:
        super().__init__()
        self.critic = critic
        self.config = critic.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        critic = lora.unwrap(self.critic)  # a LoRA critic: its transformers model, adapters on
        hidden = critic.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            use_cache=False,
        ).last_hidden_state
        return critic.score(hidden).squeeze(-1).float()

    def gradient_checkpointing_enable(self) -> None:
        self.critic.gradient_checkpointing_enable()


def response_values(
    values: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    rows_per_forward: int | None = None,
) -> torch.Tensor:
    """(B, R) value estimates V(prompt + response[:t]) from ``values`` (a :class:`TokenValues`,
    or its engine's wrapper), read at the position that predicts response token t;
    ``rows_per_forward`` as in :func:`response_logprobs`."""
    chunks = _row_chunks(len(input_ids), rows_per_forward)
    return _joined(
        [values(input_ids[rows], attention_mask[rows])[:, prompt_width - 1 : -1] for rows in chunks]
    )


def sequence_logprob_sums(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
) -> torch.Tensor:
    """(B,) summed log-probs of the tokens ``loss_mask`` selects (the answers), for a
    right-padded batch of whole sequences: log p(answer | prompt) per row.

    Args:
        input_ids, attention_mask, loss_mask: (B, T); ``loss_mask`` is 1 on answer tokens.
    """
    logprobs = token_logprobs(sequence_logits(model, input_ids, attention_mask), input_ids)
    return (logprobs * loss_mask[:, 1:].to(logprobs.dtype)).sum(-1)


@torch.no_grad()
def heldout_nll(
    model: torch.nn.Module, examples: Sequence[Encoded], pad_id: int, batch_size: int
) -> float:
    """Mean negative log-likelihood per counted (response) token over ``examples``, batched
    by length; nan when no example has a counted token. Used for SFT validation and for the
    evaluation stage's perplexity."""
    device = next(model.parameters()).device
    nll, tokens = 0.0, 0
    # Indices sorted (stably) by length: the examples are built a batch at a time, not all.
    ordered = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for start in range(0, len(ordered), batch_size):
        batch = [examples[i] for i in ordered[start : start + batch_size]]
        b = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
        nll -= sequence_logprob_sums(model, **b).sum().item()
        tokens += int(b["loss_mask"][:, 1:].sum())
    return nll / tokens if tokens else math.nan
