"""The project's own decode loop for rollouts: the same tokens as ``model.generate`` (sampling
with temperature and top-p, or greedy) for the same torch RNG state, and the same RNG state
after it, without generate's per-token machinery, and with finished rows leaving the batch.

Prefill the left-padded prompts once; then per token one forward of the rows still running,
with their KV cache. A row that emits EOS leaves the batch: its rows of the cache are dropped
(``Cache.batch_select_indices``). Each step still draws the sample for all rows, because
``torch.multinomial`` consumes the RNG in proportion to the whole (rows, vocabulary) tensor:
finished rows get a one-hot distribution, so the running rows see the very random numbers
``generate`` gives them, and the RNG ends where ``generate`` leaves it.

``decodes_itself`` is the rule for which models take this loop; ``sample_responses`` sends the
others to ``model.generate``."""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from transformers import DynamicCache, PreTrainedModel

from rlhf.modeling.lora import is_lora

# Architectures whose cache, position ids and masks this loop drives as generate does:
# tests/unit/test_decoding.py checks each bit for bit against model.generate.
DECODED_TYPES = frozenset({"llama", "qwen2", "mistral", "gemma", "gpt2", "phi3"})

# generation_config fields that change nothing here: token ids, bookkeeping, output switches,
# lengths, and the sampling settings that every call passes itself. Any other field set (a
# repetition penalty, min_new_tokens, a static cache ...) makes generate do more than sample.
_NEUTRAL_GENERATION_FIELDS = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
    "transformers_version", "_from_model_config", "output_attentions", "output_hidden_states",
    "do_sample", "temperature", "top_p", "top_k", "max_length", "max_new_tokens", "use_cache",
})  # fmt: skip


def _decoder(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model whose forward runs: a LoRA model's base (its adapters are in it)."""
    return model.get_base_model() if is_lora(model) else model


def _zero3_across_ranks() -> bool:
    """ZeRO-3 shards each layer across ranks, so every rank must run every forward together
    (generate's ``synced_gpus``); this loop stops a rank when its own rows are done."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() and dist.is_initialized() and dist.get_world_size() > 1


def decodes_itself(model: torch.nn.Module) -> bool:
    """The rule: this loop samples for ``model`` exactly when ``model.generate`` would do no more
    than it does: a tested architecture (``DECODED_TYPES``), a generation config that adds no
    logits processor or cache of its own, and no ZeRO-3 sharding across ranks."""
    decoder = _decoder(model)
    config = decoder.generation_config
    return (
        decoder.config.model_type in DECODED_TYPES
        and set(config.to_diff_dict()) <= _NEUTRAL_GENERATION_FIELDS
        and config.use_cache is not False
        and not _zero3_across_ranks()
    )


def _nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """``scores`` with the tokens outside the top-p nucleus at -inf: sorted ascending, the
    tokens whose cumulative probability stays within 1 - top_p go, the most likely always stays
    (the arithmetic of transformers' TopPLogitsWarper, so that the samples are the same)."""
    ascending, order = torch.sort(scores, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return scores.masked_fill(drop, -float("inf"))


@torch.no_grad()
def decode(
    model: torch.nn.Module,
    ids: torch.Tensor,
    attention: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> torch.Tensor:
    """(B, R) tokens after the left-padded prompts ``ids`` (mask ``attention``), R the steps run:
    ``max_new_tokens``, or fewer when every row has emitted EOS; a row holds ``pad_id`` after its
    EOS. Sampling draws from torch's global RNG, as ``model.generate`` does."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    decoder = _decoder(model)
    batch, width = ids.shape
    accepted = inspect.signature(decoder.forward).parameters
    keep_logits = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    # transformers renamed past_key_values to cache (5.19 has the old name, 5.24 the new);
    # forward takes **kwargs, so the wrong name would be dropped and every step would run
    # without the tokens before it.
    cache_arg = "cache" if "cache" in accepted else "past_key_values"
    positions = (attention.long().cumsum(-1) - 1).masked_fill(attention == 0, 0)
    # generate drops an all-ones mask (no padding), which changes the attention kernel's path
    mask = (
        None
        if bool((attention == 1).all())
        else torch.cat([attention, attention.new_ones(batch, max_new_tokens)], dim=1)
    )
    cache = DynamicCache(config=decoder.config.get_text_config(decoder=True))
    out = decoder(
        input_ids=ids, attention_mask=None if mask is None else attention,
        position_ids=positions, use_cache=True, **{cache_arg: cache}, **keep_logits,
    )  # fmt: skip
    tokens = ids.new_full((batch, max_new_tokens), pad_id)
    rows = torch.arange(batch, device=ids.device)  # the running rows' places in the batch
    position = positions[:, -1:]
    all_probs: torch.Tensor | None = None  # (B, V) once a row has left: finished rows one-hot
    steps = 0
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if greedy:
            token = logits.argmax(dim=-1)
        else:
            if temperature != 1.0:
                logits = logits / temperature
            if top_p < 1.0:
                logits = _nucleus(logits, top_p)
            probs = torch.softmax(logits, dim=-1)
            if all_probs is None:
                token = torch.multinomial(probs, 1).squeeze(1)
            else:
                all_probs.index_copy_(0, rows, probs)
                token = torch.multinomial(all_probs, 1).squeeze(1).index_select(0, rows)
        tokens[rows, step] = token
        steps = step + 1
        if steps == max_new_tokens:
            break
        finished = token == eos_id
        if bool(finished.any()):
            running = (~finished).nonzero().squeeze(1)
            if running.numel() == 0:
                break
            if all_probs is None and not greedy:
                all_probs = logits.new_zeros(batch, logits.shape[-1])
                all_probs[:, 0] = 1.0
            if all_probs is not None:
                all_probs[rows[finished]] = 0.0
                all_probs[rows[finished], 0] = 1.0
            rows, token, position = rows[running], token[running], position[running]
            cache.batch_select_indices(running)
            if mask is not None:
                mask = mask[running]
        position = position + 1
        out = decoder(
            input_ids=token[:, None],
            attention_mask=None if mask is None else mask[:, : width + step + 1],
            position_ids=position, use_cache=True, **{cache_arg: cache}, **keep_logits,
        )  # fmt: skip
    return tokens[:, :steps]
