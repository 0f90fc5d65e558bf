"""Sampling the compared models, each loaded once: its responses and their lengths, its
perplexity on held-out SFT data, and KL(candidate || reference) on the candidate's samples."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from rlhf.config import EvalConfig
from rlhf.console.progress import Progress
from rlhf.modeling import models
from rlhf.modeling.encoding import Messages, encode_conversation, encode_prompt
from rlhf.modeling.forward import heldout_nll, response_logprobs
from rlhf.modeling.generation import Rollout, SamplingConfig, decode_responses, sample_responses
from rlhf.modeling.packed import PackedEncoded
from rlhf.stages.evaluation.compared import CANDIDATE, REFERENCE
from rlhf.stages.evaluation.metrics import sample_kl

log = logging.getLogger("rlhf.evaluate")

_CPU = torch.device("cpu")


@dataclass
class Samples:
    """One model's decoded responses, prompt-major (entry ``p * samples_per_prompt + s`` is
    sample s for prompt p)."""

    responses: list[str]
    lengths: list[int]  # response tokens, EOS included
    perplexity: float | None  # None without SFT data (or no response token in it)


def sample_all(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Messages],
    config: EvalConfig,
    progress: Progress | None = None,
) -> list[Rollout]:
    """``samples_per_prompt`` responses to every prompt, in prompt-major batches of
    ``batch_size``, kept on the CPU. Seeds torch (and Python, NumPy) with ``config.seed``
    first, so a model's samples depend only on the model, the prompts and the config.
    ``progress`` counts the responses."""
    budget = config.max_length - config.max_new_tokens
    encoded = [encode_prompt(tokenizer, m, config.chat_template)[-budget:] for m in prompts]
    flat = [ids for ids in encoded for _ in range(config.samples_per_prompt)]
    sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p)
    set_seed(config.seed)
    rollouts = []
    for i in range(0, len(flat), config.batch_size):
        batch = flat[i : i + config.batch_size]
        rollouts.append(sample_responses(model, tokenizer, batch, sampling).to(_CPU))
        if progress is not None:
            progress.update(len(batch))
    return rollouts


@torch.no_grad()
def rollout_logprobs(
    model: PreTrainedModel, rollouts: list[Rollout], temperature: float
) -> list[torch.Tensor]:
    """Per batch, (B, R) log-probs of the rollouts' response tokens under ``model`` at the
    sampling temperature (on the CPU, float32; padding not masked)."""
    device = next(model.parameters()).device
    out = []
    for r in rollouts:
        r = r.to(device)
        lp, _ = response_logprobs(
            model, r.input_ids, r.attention_mask, r.prompt_width, temperature=temperature
        )
        out.append(lp.float().to(_CPU))
    return out


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    config: EvalConfig,
) -> float | None:
    """exp(mean NLL per response token) of SFT conversations (the loss mask of
    ``encode_conversation``: assistant turns only); None when no row has a response token."""
    examples = PackedEncoded(
        encode_conversation(tokenizer, r["messages"], config.max_length, config.chat_template)
        for r in rows
    )
    loss = heldout_nll(model, examples, tokenizer.pad_token_id, config.batch_size)
    return None if math.isnan(loss) else math.exp(min(loss, 50.0))


def _same_vocab(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


def sample_models(
    paths: dict[str, str],
    prompts: list[Messages],
    config: EvalConfig,
    device: torch.device,
    sft_rows: Sequence[dict[str, Any]] | None,
) -> tuple[dict[str, Samples], float | None]:
    """Every model of ``paths`` (name -> folder; candidate first, reference second), loaded
    one at a time: its samples, and its perplexity on ``sft_rows`` when given. The candidate's
    rollouts are kept for the reference to score: the second value is KL(candidate ||
    reference), None when their tokenizers differ."""
    n_responses = len(paths) * len(prompts) * config.samples_per_prompt
    progress = Progress("evaluate sampling", n_responses, "response")
    samples: dict[str, Samples] = {}
    kl: float | None = None
    cand_tokenizer: PreTrainedTokenizerBase | None = None
    cand_rollouts: list[Rollout] = []
    cand_logprobs: list[torch.Tensor] = []
    for name, path in paths.items():
        log.debug(
            "evaluate: sampling %d responses from %s (%s)",
            len(prompts) * config.samples_per_prompt,
            name,
            path,
        )
        tokenizer = models.load_tokenizer(path, config.trust_remote_code)
        model = models.load_causal_lm(path, config.dtype, config.trust_remote_code)
        model.to(device).eval()
        rollouts = sample_all(model, tokenizer, prompts, config, progress)
        if name == CANDIDATE:
            cand_tokenizer, cand_rollouts = tokenizer, rollouts
            cand_logprobs = rollout_logprobs(model, rollouts, config.temperature)
        elif name == REFERENCE:
            assert cand_tokenizer is not None
            if _same_vocab(cand_tokenizer, tokenizer):
                ref_logprobs = rollout_logprobs(model, cand_rollouts, config.temperature)
                kl = sample_kl(cand_rollouts, cand_logprobs, ref_logprobs)
            else:
                log.warning("evaluate: candidate and reference tokenizers differ; no KL reported")
        ppl = perplexity(model, tokenizer, sft_rows, config) if sft_rows is not None else None
        del model
        texts = [t for r in rollouts for t in decode_responses(tokenizer, r)]
        lengths = [int(n) for r in rollouts for n in r.response_mask.sum(-1).tolist()]
        samples[name] = Samples(texts, lengths, ppl)
    progress.close()
    return samples, kl
