"""The project's decode loop (``rlhf.modeling.decoding``) against ``model.generate`` itself, on
tiny random models of every architecture tests/tiny_models.py builds: the same tokens bit for
bit and the same torch RNG state afterwards, for left-padded prompts of different lengths,
rows finishing at different steps, temperature and top-p, greedy, one new token; and the rule
that sends the other models to ``model.generate``."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, STYLES, styled_tokenizer
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from rlhf.modeling import decoding
from rlhf.modeling.decoding import decode, decodes_itself
from rlhf.modeling.generation import SamplingConfig, sample_responses

TEXTS = ["the quick brown fox jumps over the lazy dog", "a b c d e f g", "hello world"] * 20
PAD = 0


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    arch = ARCHITECTURES[name]
    tok = styled_tokenizer(STYLES[arch.style], TEXTS)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(arch.config(tok)).eval()


def _prompts(lengths: list[int], vocab: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    rows = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _generate(model, ids, mask, new, eos, temperature=1.0, top_p=1.0, greedy=False):
    sampling = {} if greedy else dict(temperature=temperature, top_p=top_p, top_k=0)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                         do_sample=not greedy, pad_token_id=PAD, eos_token_id=eos,
                         **sampling)  # fmt: skip
    return out[:, ids.shape[1] :]


def _frequent_token(model, ids, mask, new: int) -> int:
    """A token made frequent (its output embedding lengthened): as EOS, it ends rows at
    different steps."""
    eos = 3
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        weight[eos] *= 4 / weight[eos].norm()
    return eos


def _same_as_generate(model, ids, mask, new, eos, **sampling) -> torch.Tensor:
    torch.manual_seed(123)
    expected = _generate(model, ids, mask, new, eos, **sampling)
    expected_rng, expected_next = torch.get_rng_state(), torch.rand(3)
    torch.manual_seed(123)
    got = decode(model, ids, mask, new, eos, PAD, **sampling)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert torch.equal(torch.rand(3), expected_next)
    return got


CASES = {
    "t1": dict(),
    "t0.7-p0.9": dict(temperature=0.7, top_p=0.9),
    "t1.5-p0.5": dict(temperature=1.5, top_p=0.5),
    "greedy": dict(greedy=True),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_same_tokens_and_rng_as_generate(name, case):
    model = _model(name)
    ids, mask = _prompts([3, 9, 5, 12, 1, 7, 12, 4], model.config.vocab_size)
    eos = _frequent_token(model, ids, mask, 12)
    got = _same_as_generate(model, ids, mask, 12, eos, **CASES[case])
    if case == "t1":  # the case exercises rows leaving the batch at different steps
        first_eos = torch.where((got == eos).any(1), (got == eos).int().argmax(1), -1)
        assert len(set(first_eos[first_eos >= 0].tolist())) >= 2, first_eos
        assert (first_eos < 0).any() or got.shape[1] < 12, first_eos


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_edges_same_as_generate(name):
    model = _model(name)
    vocab = model.config.vocab_size
    ids, mask = _prompts([6, 2, 9], vocab)
    assert _same_as_generate(model, ids, mask, 1, eos=2).shape[1] == 1  # one new token
    _same_as_generate(model, ids, mask, 1, eos=2, greedy=True)
    eos = _frequent_token(model, ids, mask, 10)
    same, same_mask = _prompts([7, 7, 7], vocab)  # no padding: generate drops the mask
    _same_as_generate(model, same, same_mask, 10, eos, temperature=0.8, top_p=0.95)
    one, one_mask = _prompts([5], vocab)  # one row: matrix-vector shapes
    _same_as_generate(model, one, one_mask, 10, eos)
    # every row ends before max_new_tokens: the loop stops where generate stops
    got = _same_as_generate(model, ids, mask, 40, eos)
    assert got.shape[1] < 40 and (got == eos).any(1).all()
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1, got 0"):
        decode(model, ids, mask, 0, eos, PAD)


def test_lora_model_same_as_generate():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for module in model.modules():  # non-zero adapters, so that they change the samples
        if hasattr(module, "lora_B"):
            for b in module.lora_B.values():
                torch.nn.init.normal_(b.weight, std=0.5)
    model.eval()
    ids, mask = _prompts([4, 8, 2], model.config.vocab_size)
    assert decodes_itself(model)
    _same_as_generate(model, ids, mask, 8, eos=_frequent_token(model, ids, mask, 8))


class _Tokenizer:
    pad_token_id, eos_token_id = PAD, 2


def test_sample_responses_rollout_unchanged():
    """The rollout is the one sample_responses built from model.generate before the loop."""
    model = _model("qwen2")
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    config = SamplingConfig(max_new_tokens=6, temperature=0.9, top_p=0.8)
    torch.manual_seed(7)
    rollout = sample_responses(model, _Tokenizer(), prompts, config)
    ids = torch.tensor([[PAD, PAD, 5, 6, 7], [PAD] * 4 + [8], [9, 10, 11, 12, 13]])
    mask = (ids != PAD).long()
    torch.manual_seed(7)
    response = _generate(model, ids, mask, 6, 2, temperature=0.9, top_p=0.8)
    assert torch.equal(rollout.input_ids[:, :5], ids)
    assert torch.equal(rollout.response_ids, torch.where(rollout.response_mask.bool(), response,
                                                         PAD))  # fmt: skip
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        sample_responses(model, _Tokenizer(), prompts, SamplingConfig(max_new_tokens=0))


def test_the_rule_sends_other_models_to_generate(monkeypatch):
    assert all(decodes_itself(_model(n)) for n in ARCHITECTURES)
    # an architecture the loop is not tested on
    neox = AutoModelForCausalLM.from_config(GPTNeoXConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, eos_token_id=2, pad_token_id=PAD,
    )).eval()  # fmt: skip
    assert not decodes_itself(neox)
    # a generation config that makes generate do more than sample
    penalised = _model("llama")
    penalised.generation_config.repetition_penalty = 1.3
    assert not decodes_itself(penalised)
    static = _model("llama")
    static.generation_config.cache_implementation = "static"
    assert not decodes_itself(static)
    # ZeRO-3 across ranks: every rank must run every forward (generate's synced_gpus)
    monkeypatch.setattr(decoding, "_zero3_across_ranks", lambda: True)
    assert not decodes_itself(_model("llama"))
    monkeypatch.undo()

    # the fallback samples what generate samples, penalty included, and never the loop
    def refuse(*args, **kwargs):
        raise AssertionError("the loop ran for a model it does not handle")

    monkeypatch.setattr("rlhf.modeling.generation.decode", refuse)
    prompts = [[5, 6, 7], [8]]
    for model in (neox, penalised):
        torch.manual_seed(3)
        rollout = sample_responses(model, _Tokenizer(), prompts, SamplingConfig(max_new_tokens=5))
        ids = torch.tensor([[5, 6, 7], [PAD, PAD, 8]])
        mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
        torch.manual_seed(3)
        response = _generate(model, ids, mask, 5, 2)
        assert torch.equal(rollout.response_ids, torch.where(rollout.response_mask.bool(),
                                                             response, PAD))  # fmt: skip
