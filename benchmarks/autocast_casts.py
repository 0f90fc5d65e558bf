"""Counts the dtype casts (``aten::_to_copy``) the project's decode loop runs on the bench-size
Llama with bf16 weights, and as the training stages sample: fp32 weights under bf16 autocast.
Each extra cast is one more kernel launch on a GPU. Also says whether any extra cast is of a
weight's shape (autocast caches the casts of weights) or all are of activations.

    PYTHONPATH=src:benchmarks python benchmarks/autocast_casts.py

Runs on the CPU in seconds (docs/benchmarks.md#on-a-gpu cites it).
"""

from __future__ import annotations

from collections import Counter

import torch
from llama_shapes import build_llama, llama_config
from torch.profiler import ProfilerActivity, profile

from rlhf.modeling.decoding import decode

PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 4, 16, 16


def casts(weights: torch.dtype, autocast: bool) -> tuple[Counter[tuple[int, ...]], set]:
    """Casts by input shape over one decode of NEW_TOKENS tokens (a prefill and NEW_TOKENS
    forwards, after a warm-up decode), and the shapes of the model's weights."""
    torch.manual_seed(0)
    model = build_llama(llama_config("bench", PROMPT_TOKENS + NEW_TOKENS)).to(weights).eval()
    ids = torch.randint(1, 500, (PROMPTS, PROMPT_TOKENS))
    context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with torch.no_grad(), context:
        decode(model, ids, torch.ones_like(ids), 4, 511, 0)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            decode(model, ids, torch.ones_like(ids), NEW_TOKENS, 511, 0)
    shapes = Counter(tuple(e.input_shapes[0]) for e in prof.events() if e.name == "aten::_to_copy")
    return shapes, {tuple(p.shape) for p in model.parameters()}


def main() -> None:
    bf16, weight_shapes = casts(torch.bfloat16, autocast=False)
    stage, _ = casts(torch.float32, autocast=True)
    extra = stage - bf16
    forwards = 1 + NEW_TOKENS
    print(f"decode of {NEW_TOKENS} tokens for {PROMPTS} prompts ({forwards} forwards)")
    print(f"casts, bf16 weights: {sum(bf16.values())}")
    print(f"casts, fp32 weights under bf16 autocast: {sum(stage.values())}")
    more = sum(stage.values()) - sum(bf16.values())
    print(f"more: {more} ({more / forwards:.1f} per forward)")
    print(f"shapes cast more often: {sum(extra.values())} casts, of which of a weight's shape: "
          f"{sum(n for s, n in extra.items() if s in weight_shapes)}")  # fmt: skip
    for shape, n in extra.most_common(4):
        print(f"  {n} of shape {list(shape)}")


if __name__ == "__main__":
    main()
