"""Load and save models and tokenizers: local folders, ``s3://`` URIs, hub ids, tiny presets.

A *preset* (``preset:tiny-llama``) builds a small Llama-shaped model from a config, with no
download, for the demo and the tests. Everything is saved in Hugging Face format with
safetensors only, so any ``from_pretrained`` can read our outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf import storage
from rlhf.config import DTYPES as DTYPE_NAMES

PRESET_PREFIX = "preset:"

# Llama-shaped and small enough to train from scratch on 2 CPU cores in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(
        hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4
    ),
    "tiny-llama-4l": dict(
        hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6
    ),
    "micro-llama": dict(  # for unit tests: a forward pass in milliseconds
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    ),
}


def is_preset(name: str) -> bool:
    return str(name).startswith(PRESET_PREFIX)


def preset_config(name: str, tokenizer: PreTrainedTokenizerBase, max_length: int) -> LlamaConfig:
    key = name[len(PRESET_PREFIX) :]
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {key!r}; known: {sorted(PRESETS)}")
    shape = PRESETS[key]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_length,
        num_key_value_heads=shape["num_attention_heads"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        **shape,
    )


def build_from_preset(
    name: str, tokenizer: PreTrainedTokenizerBase, max_length: int = 512, dtype: str = "float32"
) -> LlamaForCausalLM:
    """A freshly initialised model of preset ``name`` sized to ``tokenizer``'s vocabulary."""
    return LlamaForCausalLM(preset_config(name, tokenizer, max_length)).to(_dtype(dtype))


def resolve(uri: str) -> str:
    """A path or hub id ``from_pretrained`` can take: S3 prefixes are downloaded (cached)."""
    if storage.is_s3(uri):
        return str(storage.local_path(uri))
    return str(uri)


# config.DTYPES names them, in this order.
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def load_tokenizer(uri: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it can pad: without a pad token, EOS pads (an existing
    token, so the model's embeddings are never resized). Every answer ends with EOS and
    generation stops on it, so a tokenizer without one is refused."""
    tok = AutoTokenizer.from_pretrained(resolve(uri), trust_remote_code=trust_remote_code)
    if tok.eos_token is None:
        raise ValueError(
            f"{uri}: the tokenizer has no EOS token (eos_token in tokenizer_config.json); "
            "answers end with it and generation stops on it"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    uri: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    quantization: BitsAndBytesConfig | None = None,
) -> PreTrainedModel:
    """``quantization``: QLoRA's 4-bit base (``lora.quantization_config``), loaded on the GPU."""
    return AutoModelForCausalLM.from_pretrained(
        resolve(uri), dtype=_dtype(dtype), trust_remote_code=trust_remote_code,
        **_quantized(quantization),
    )  # fmt: skip


def load_reward_model(
    uri: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    quantization: BitsAndBytesConfig | None = None,
) -> PreTrainedModel:
    """A sequence classifier with one output: the scalar reward read at the last non-pad token.

    Loading a causal LM folder here adds a freshly initialised ``score`` head (what the reward
    stage starts from); loading a reward-model folder restores its trained head."""
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve(uri), num_labels=1, dtype=_dtype(dtype), trust_remote_code=trust_remote_code,
        **_quantized(quantization),
    )  # fmt: skip
    return model


def _quantized(quantization: BitsAndBytesConfig | None) -> dict[str, Any]:
    """from_pretrained's extra arguments for a 4-bit model: bitsandbytes quantizes on the GPU."""
    if quantization is None:
        return {}
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


def save_pretrained(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike
) -> None:
    """Save weights (safetensors only) and tokenizer into ``folder``."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def take_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Make ``model`` hold ``weights`` (its state dict's names; gathered from ZeRO-3 shards, or
    fp32 master weights) as its own parameters and buffers, whatever their shapes and dtypes
    were: a sharded model becomes whole, ready to merge adapters into and to save."""
    for name, tensor in model.state_dict(keep_vars=True).items():
        tensor.data = weights[name]


def parameter_count(model: torch.nn.Module) -> int:
    """The model's parameters, whole even when this rank holds only shards (ZeRO-3)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
