"""The Llama-shaped models the benchmarks train: named sizes, built from a config with random
weights (nothing is downloaded), as the project's ``preset:`` models are."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Shapes by name. "100m": GPT-2-small's width and depth with a 32k vocabulary (tied
# embeddings); "1b": TinyLlama-1.1B's shape (grouped-query attention, 4 KV heads); "micro": a
# forward pass in milliseconds, to keep the scripts running in tests; "bench": small enough for
# every kind of work to run side by side on 2 CPU cores in minutes.
SIZES: dict[str, dict[str, Any]] = {
    "micro": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True,
    ),
    "bench": dict(  # the side-by-side benchmarks' model (side_by_side.py): 4 layers, 256 wide
        hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=512, tie_word_embeddings=True,
    ),
    "100m": dict(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=12, vocab_size=32000, tie_word_embeddings=True,
    ),
    "1b": dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False,
    ),
}  # fmt: skip


def llama_config(size: str, max_length: int, vocab_size: int | None = None) -> LlamaConfig:
    """The config of size ``size``; ``vocab_size`` replaces the shape's own (a tokenizer's)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {sorted(SIZES)}")
    shape = dict(SIZES[size])
    if vocab_size is not None:
        shape["vocab_size"] = vocab_size
    return LlamaConfig(max_position_embeddings=max_length, bos_token_id=None, **shape)


def build_llama(config: LlamaConfig, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised model (the same weights on every rank for the same seed)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def parameter_count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameters of the whole model, also when ZeRO-3 holds only a shard of each (its
    ``ds_numel`` is the whole parameter's size)."""
    return sum(
        getattr(p, "ds_numel", p.numel())
        for p in model.parameters()
        if p.requires_grad or not trainable_only
    )
