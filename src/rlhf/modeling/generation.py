"""Batched, KV-cached sampling of responses, shared by PPO, GRPO and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.modeling.decoding import decode, decodes_itself
from rlhf.modeling.padding import pad_left


@dataclass
class SamplingConfig:
    """How responses are sampled."""

    max_new_tokens: int = 32  # responses stop here if they have not emitted EOS
    temperature: float = 1.0  # 1.0 samples from the policy itself (what the KL terms assume)
    top_p: float = 1.0  # nucleus sampling; < 1 changes the sampled distribution


@dataclass
class Rollout:
    """Prompts and sampled responses in one padded batch.

    ``input_ids`` and ``attention_mask`` are (B, P + R): prompts left-padded to width P, then
    responses right-padded to width R. ``response_mask`` (B, R) is 1 up to and including each
    row's first EOS; ``ended`` (B,) says whether the row emitted EOS at all."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_width: int
    response_mask: torch.Tensor
    ended: torch.Tensor

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def to(self, device: torch.device) -> Rollout:
        return Rollout(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.prompt_width,
            self.response_mask.to(device),
            self.ended.to(device),
        )

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        return Rollout(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.prompt_width,
            self.response_mask[rows],
            self.ended[rows],
        )


def response_mask(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R) mask up to and including the first EOS, and (B,) whether an EOS occurred."""
    is_eos = response_ids == eos_id
    ended = is_eos.any(-1)
    # tokens strictly after the first EOS: an EOS occurred at an earlier position
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~after).long(), ended


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    config: SamplingConfig,
    greedy: bool = False,
) -> Rollout:
    """Sample one response per prompt (token ids). Randomness comes from torch's global RNG,
    which the stages seed and checkpoint. The project's decode loop (``decoding.py``) samples
    the same tokens as ``model.generate`` would, faster; models it does not handle
    (``decodes_itself``) go to ``model.generate``."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    ids = pad_left(prompts, pad).to(device)
    attention = pad_left([[1] * len(p) for p in prompts], 0).to(device)
    if config.max_new_tokens < 1:  # model.generate refuses it too
        raise ValueError(f"max_new_tokens must be at least 1, got {config.max_new_tokens}")
    was_training = model.training
    model.eval()
    if decodes_itself(model):
        response = decode(
            model, ids, attention, config.max_new_tokens, tokenizer.eos_token_id, pad,
            temperature=config.temperature, top_p=config.top_p, greedy=greedy,
        )  # fmt: skip
    else:
        response = model.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=config.max_new_tokens,
            do_sample=not greedy,
            temperature=config.temperature if not greedy else None,
            top_p=config.top_p if not greedy else None,
            top_k=0 if not greedy else None,  # no top-k: sample from the full distribution
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
        )[:, ids.shape[1] :]
    model.train(was_training)
    mask, ended = response_mask(response, tokenizer.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, pad))
    return _joined(ids, attention, response, mask, ended)


def rollout_from_responses(
    prompts: list[list[int]], responses: list[list[int]], eos_id: int, pad_id: int
) -> Rollout:
    """The :class:`Rollout` of prompts and responses (token ids) sampled elsewhere (vLLM), as
    :func:`sample_responses` gives it: each response cut after its first EOS, if it has one.
    The mask comes from the lengths, not from looking for EOS in the padding, which may be
    the same token."""
    cut = [r[: r.index(eos_id) + 1] if eos_id in r else r for r in responses]
    width = max([1, *map(len, cut)])  # a response column even if every one is empty
    response = torch.tensor([r + [pad_id] * (width - len(r)) for r in cut], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in cut], dtype=torch.long)
    ended = torch.tensor([bool(r) and r[-1] == eos_id for r in cut])
    ids = pad_left(prompts, pad_id)
    return _joined(ids, pad_left([[1] * len(p) for p in prompts], 0), response, mask, ended)


def _joined(
    ids: torch.Tensor,
    attention: torch.Tensor,
    response: torch.Tensor,
    mask: torch.Tensor,
    ended: torch.Tensor,
) -> Rollout:
    """Left-padded prompts (B, P) and their masked responses (B, R) in one rollout."""
    full = torch.cat([ids, response.to(ids.device)], dim=1)
    mask, ended = mask.to(ids.device), ended.to(ids.device)
    return Rollout(full, torch.cat([attention, mask], dim=1), ids.shape[1], mask, ended)


def decode_responses(tokenizer: PreTrainedTokenizerBase, rollout: Rollout) -> list[str]:
    """Response texts without special tokens (EOS, padding)."""
    return [
        tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True).strip()
        for row, m in zip(rollout.response_ids, rollout.response_mask, strict=True)
    ]
