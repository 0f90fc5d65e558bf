"""Whether keeping only the response positions' logits (transformers' ``logits_to_keep``)
gives bit for bit what the stages compute today from the full logits (docs/benchmarks.md,
GRPO): the forward logits over a grid of batch shapes, with 1 and 2 torch threads, and the
gradient of the log-probs' sum with respect to every weight over a few shapes.

    python benchmarks/logits_to_keep.py

Prints, per model and thread count, how many shapes differ in any bit.
"""

from __future__ import annotations

import datetime
import itertools

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rlhf.algorithms.logprobs import token_logprobs
from rlhf.modeling.forward import position_ids

BATCHES, PROMPTS, RESPONSES = (1, 2, 5, 16, 64), (1, 4, 33, 120), (1, 2, 17, 64)
GRADIENT_SHAPES = ((16, 30, 16), (4, 50, 32), (8, 7, 3), (3, 100, 60), (16, 37, 9))


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "llama": LlamaForCausalLM(LlamaConfig(
            vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4)),
        "gpt2": GPT2LMHeadModel(GPT2Config(
            vocab_size=1000, n_embd=64, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(
            vocab_size=777, hidden_size=96, intermediate_size=200, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)),
    }  # fmt: skip


def batch(model: torch.nn.Module, rows: int, prompt: int, response: int):
    ids = torch.randint(0, model.config.vocab_size, (rows, prompt + response))
    mask = torch.ones_like(ids)
    if rows > 1 and prompt > 2:
        mask[: rows // 2, :2] = 0  # left padding, as rollouts have
    return dict(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))


def logits(model: torch.nn.Module, inputs: dict, prompt: int, response: int, keep: bool):
    if keep:
        return model(**inputs, use_cache=False, logits_to_keep=response + 1).logits
    return model(**inputs, use_cache=False).logits[:, prompt - 1 :]


def main() -> None:
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, model in models().items():
            model.eval()
            differ = 0
            shapes = list(itertools.product(BATCHES, PROMPTS, RESPONSES))
            for rows, prompt, response in shapes:
                inputs = batch(model, rows, prompt, response)
                with torch.no_grad():
                    full = logits(model, inputs, prompt, response, keep=False)
                    kept = logits(model, inputs, prompt, response, keep=True)
                differ += not torch.equal(full, kept)
            print(f"{threads} thread(s) {name}: forward logits differ in {differ} of {len(shapes)}")
    torch.set_num_threads(2)
    model = models()["llama"].train()
    differ = []
    for rows, prompt, response in GRADIENT_SHAPES:
        inputs = batch(model, rows, prompt, response)
        grads = []
        for keep in (False, True):
            model.zero_grad()
            out = logits(model, inputs, prompt, response, keep)
            token_logprobs(out, inputs["input_ids"][:, prompt - 1 :]).sum().backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        names = [n for n in grads[0] if not torch.equal(grads[0][n], grads[1][n])]
        differ.append(names)
    print(f"2 threads llama: gradients differ in {sum(map(bool, differ))} of "
          f"{len(GRADIENT_SHAPES)} shapes, in {sorted({n for d in differ for n in d})}")  # fmt: skip


if __name__ == "__main__":
    main()
