"""A bare batched sampler: one forward pass over the left-padded prompts, then one token per
step from the KV cache at temperature 1 over the full distribution, until every row has
emitted EOS or ``new_tokens`` tokens. The limit the project's rollout sampler is measured
against, besides ``model.generate``."""

from __future__ import annotations

import torch


@torch.no_grad()
def sample(
    model: torch.nn.Module, prompts: list[list[int]], new_tokens: int, eos: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(B, P + R) prompt and response ids and their attention mask, the (B, R) response mask
    (up to and including the first EOS) and the width P of the left-padded prompts."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    prompt_attention = attention
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True)
    cache, logits, last = out.past_key_values, out.logits[:, -1], positions[:, -1:]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    tokens, masks = [], []
    for _ in range(new_tokens):
        token = torch.multinomial(torch.softmax(logits.float(), -1), 1).squeeze(-1)
        token = torch.where(done, torch.full_like(token, pad), token)
        masks.append(~done)
        tokens.append(token)
        done = done | (token == eos)
        if bool(done.all()):
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
        last = last + 1
        out = model(input_ids=token[:, None], attention_mask=attention, position_ids=last,
                    past_key_values=cache, use_cache=True)  # fmt: skip
        cache, logits = out.past_key_values, out.logits[:, -1]
    response, mask = torch.stack(tokens, 1), torch.stack(masks, 1).long()
    return torch.cat([ids, response], 1), torch.cat([prompt_attention, mask], 1), mask, width
