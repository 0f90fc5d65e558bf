"""Rollout generation side by side: the project's sampler (``rlhf.modeling.generation.
sample_responses``, what PPO, GRPO and evaluation sample with), ``model.generate`` called
directly, and the bare KV-cached loop (``bare_sampling.py``); each samples ``gen_batch``
prompts at a time at temperature 1 over the full distribution (no top-k, top-p 1), at most
``new_tokens`` tokens, one warm-up batch and ``gen_rounds`` timed ones. Counted in response
tokens generated per second (up to and including each response's EOS)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bare_sampling import sample
from bench_inputs import Inputs
from bench_time import now
from on_policy_parts import prompts

from rlhf.modeling import models
from rlhf.modeling.generation import SamplingConfig, response_mask, sample_responses

Sampler = Callable[[list[list[int]]], int]  # prompt ids -> response tokens generated


def _timed(inputs: Inputs, sampler_for: Callable[[Any, Any], Sampler]) -> dict[str, Any]:
    s = inputs.settings
    tokenizer = models.load_tokenizer(inputs.model)
    model = models.load_causal_lm(inputs.model).eval()
    sampler = sampler_for(model, tokenizer)
    _, ids = prompts(inputs)
    batches = [[ids[(k * s.gen_batch + i) % len(ids)] for i in range(s.gen_batch)]
               for k in range(s.gen_rounds + 1)]  # fmt: skip
    sampler(batches[0])  # warm-up
    started, tokens = now(), 0
    for batch in batches[1:]:
        tokens += sampler(batch)
    seconds = now() - started
    return {"seconds": seconds, "units": tokens, "unit": "tokens", "tokens": tokens,
            "response_length_mean": tokens / (s.gen_rounds * s.gen_batch)}  # fmt: skip


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    config = SamplingConfig(inputs.settings.new_tokens, temperature=1.0, top_p=1.0)

    def sampler_for(model: Any, tokenizer: Any) -> Sampler:
        return lambda batch: int(
            sample_responses(model, tokenizer, batch, config).response_mask.sum()
        )

    return _timed(inputs, sampler_for)


def trl(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    """``model.generate`` itself (what TRL's trainers sample with, without vLLM)."""

    def sampler_for(model: Any, tokenizer: Any) -> Sampler:
        @torch.no_grad()
        def run(batch: list[list[int]]) -> int:
            width = max(len(p) for p in batch)
            pad = tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            out = model.generate(input_ids=ids, attention_mask=attention, do_sample=True,
                                 max_new_tokens=inputs.settings.new_tokens, temperature=1.0,
                                 top_p=1.0, top_k=0, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id)  # fmt: skip
            return int(response_mask(out[:, width:], tokenizer.eos_token_id)[0].sum())

        return run

    return _timed(inputs, sampler_for)


def bare(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    def sampler_for(model: Any, tokenizer: Any) -> Sampler:
        return lambda batch: int(
            sample(model, batch, inputs.settings.new_tokens, tokenizer.eos_token_id,
                   tokenizer.pad_token_id)[2].sum()
        )  # fmt: skip

    return _timed(inputs, sampler_for)
