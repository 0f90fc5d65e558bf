"""Tiny randomly initialised models of several transformers architectures, each saved into a
folder with a tokenizer styled after that family's (special tokens, pad token or none, chat
template or none), built from configs in code: nothing comes from a hub.

The chat templates are written here, in the style of the families' published ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

# ChatML (Qwen): every turn <|im_start|>role\n...<|im_end|>\n; the turn closes with the EOS.
CHATML_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Llama 3: BOS once, then <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> per turn.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] }}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# Gemma: the assistant is "model" and a turn closes with <end_of_turn>, which is not the EOS.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Phi-3: <|role|>\n...<|end|>\n per turn; <|end|> is the EOS.
PHI3_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizerStyle:
    """A family's tokenizer: special tokens, which of them are BOS/EOS/pad, whether plain
    encoding prepends BOS (as Llama's and Mistral's tokenizers do), and its chat template."""

    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None  # None: the tokenizer has no pad token (GPT-2, Llama 3, Mistral)
    adds_bos: bool = False
    template: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


STYLES = {
    "llama3": TokenizerStyle(
        (
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ),
        eos="<|eot_id|>",
        bos="<|begin_of_text|>",
        adds_bos=True,
        template=LLAMA3_TEMPLATE,
    ),  # fmt: skip
    "chatml": TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        eos="<|im_end|>",
        pad="<|endoftext|>",
        template=CHATML_TEMPLATE,
    ),  # fmt: skip
    "mistral": TokenizerStyle(("<unk>", "<s>", "</s>"), eos="</s>", bos="<s>", adds_bos=True),
    "gemma": TokenizerStyle(
        ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
        eos="<eos>",
        bos="<bos>",
        pad="<pad>",
        adds_bos=True,
        template=GEMMA_TEMPLATE,
    ),  # fmt: skip
    "gpt2": TokenizerStyle(("<|endoftext|>",), eos="<|endoftext|>", bos="<|endoftext|>"),
    "phi3": TokenizerStyle(
        ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"),
        eos="<|end|>",
        pad="<|endoftext|>",
        template=PHI3_TEMPLATE,
    ),  # fmt: skip
}


def styled_tokenizer(
    style: TokenizerStyle, texts: Iterable[str], vocab_size: int = 400
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts`` with ``style``'s special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(style.specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if style.adds_bos:  # tokenizer(text) prepends BOS; add_special_tokens=False does not
        bos_id = tok.token_to_id(style.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{style.bos} $A",
            pair=f"{style.bos} $A $B",
            special_tokens=[(style.bos, bos_id)],
        )
    specials = {"eos_token": style.eos}
    if style.bos:
        specials["bos_token"] = style.bos
    if style.pad:
        specials["pad_token"] = style.pad
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    if style.template:
        hf.chat_template = style.template
    return hf


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int | None]:
    return dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


# 2 layers, hidden 32: a forward pass in milliseconds. Grouped-query attention where the
# family uses it (one key/value head for two query heads).
SHAPE = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=512,
)  # fmt: skip


@dataclass(frozen=True)
class Architecture:
    style: str
    config: Callable[[PreTrainedTokenizerFast], PretrainedConfig]
    tied: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("llama3", lambda t: LlamaConfig(**SHAPE, **_ids(t))),
    "qwen2": Architecture("chatml", lambda t: Qwen2Config(**SHAPE, **_ids(t))),
    "mistral": Architecture(
        "mistral", lambda t: MistralConfig(**SHAPE, sliding_window=256, **_ids(t))
    ),
    "gemma": Architecture(
        "gemma",
        lambda t: GemmaConfig(**SHAPE, head_dim=16, tie_word_embeddings=True, **_ids(t)),
        tied=True,
    ),
    # Absolute position embeddings, no pad token, BOS = EOS.
    "gpt2": Architecture(
        "gpt2",
        lambda t: GPT2Config(
            n_embd=32, n_layer=2, n_head=2, n_inner=64, n_positions=512, **_ids(t)
        ),
        tied=True,
    ),
    "phi3": Architecture(
        "phi3",
        lambda t: Phi3Config(**SHAPE, original_max_position_embeddings=512, **_ids(t)),
    ),
}


def build_model_folder(name: str, folder: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """A randomly initialised ``name`` model and its tokenizer, saved into ``folder`` the way
    a downloaded model folder looks."""
    arch = ARCHITECTURES[name]
    tok = styled_tokenizer(STYLES[arch.style], texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(arch.config(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
