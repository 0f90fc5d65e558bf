"""Every stage on tiny random models of several transformers architectures (tests/tiny_models.py),
each with a tokenizer styled after its family's: the published folders load back with plain
``from_pretrained`` and give finite outputs, tied embeddings stay tied, a pad token is found
without resizing, and log-probs recorded while sampling from left-padded prompts are what
``modeling/forward.py`` recomputes.

The full matrix is marked ``architectures`` (``make test-architectures``); the default run keeps
GPT-2, the most different (absolute positions, no pad token, BOS = EOS, no chat template), with
SFT and GRPO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_models import ARCHITECTURES, STYLES, build_model_folder
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf.config import DPOConfig, GRPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhf.data.artifacts import load_split
from rlhf.modeling import generation, models
from rlhf.modeling.encoding import encode_prompt
from rlhf.modeling.forward import response_logprobs
from rlhf.modeling.generation import SamplingConfig, sample_responses
from rlhf.modeling.reward_scoring import REFERENCE_DIR, RewardScorer
from rlhf.stages import dpo, grpo, ppo, reward, sft

DEFAULT = "gpt2"  # the one architecture the default run keeps
MATRIX = pytest.mark.architectures


def _params(default_too: bool) -> list:
    return [
        pytest.param(n, id=n, marks=() if default_too and n == DEFAULT else MATRIX)
        for n in ARCHITECTURES
    ]


EVERY = _params(default_too=True)  # GPT-2 in the default run, the rest in the matrix
MATRIX_ONLY = _params(default_too=False)
GOLD = "rlhf.data.demo_task:gold_reward"
ON_POLICY = dict(max_new_tokens=8, warmup_iterations=0, sample_every=0, max_prompt_length=96)
SUPERVISED = dict(max_steps=3, batch_size=8, eval_every=0, max_length=128, eval_batch_size=64)


@pytest.fixture(scope="session")
def tiny(prepared, tmp_path_factory):
    """``tiny(name, what)``: a folder of architecture ``name``, made once per session: ``"base"``
    (random weights and the family's tokenizer), ``"sft"`` (the default: SFT on it),
    ``"reward"`` / ``"reward_scalar"`` (a reward model on the SFT model, each head)."""
    root = tmp_path_factory.mktemp("architectures")
    texts = [m["content"] for r in load_split(prepared["sft"], "train") for m in r["messages"]]
    done: dict[tuple[str, str], str] = {}

    def get(name: str, what: str = "sft") -> str:
        if (name, what) in done:
            return done[(name, what)]
        if what == "base":
            path = build_model_folder(name, root / name / "base", texts)
        elif what == "sft":
            path = root / name / "sft"
            cfg = SFTConfig(base_model=get(name, "base"), **{**SUPERVISED, "max_steps": 6})
            sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(path)))
        else:
            path = root / name / what
            head = "scalar" if what == "reward_scalar" else "log_ratio"
            reward.run(
                RewardConfig(head=head, **SUPERVISED),
                reward.RewardInputs(prepared["preferences"], get(name, "sft")),
                reward.ModelOutputs(str(path)),
            )
        done[(name, what)] = str(path)
        return str(path)

    return get


def _finite_causal_lm(folder: str | Path, tied: bool, tokenizer: str | Path | None = None) -> None:
    """``folder`` loads with plain transformers, gives finite logits, and its tied embeddings
    are one tensor in memory and one in the file."""
    tok = AutoTokenizer.from_pretrained(tokenizer or folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([tok("oats, apple", add_special_tokens=False)["input_ids"]])
    assert torch.isfinite(model(input_ids=ids).logits).all()
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert (embed.data_ptr() == head.data_ptr()) == tied
    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert (not any(k.endswith("lm_head.weight") for k in stored)) == tied


@pytest.mark.parametrize("name", EVERY)
def test_sft_publishes_a_model_plain_transformers_loads(name, tiny):
    arch, style = ARCHITECTURES[name], STYLES[ARCHITECTURES[name].style]
    folder = tiny(name)
    _finite_causal_lm(folder, arch.tied)
    tok = models.load_tokenizer(folder)
    config = json.loads((Path(folder) / "config.json").read_text())
    vocab = AutoModelForCausalLM.from_pretrained(folder).get_input_embeddings().num_embeddings
    assert len(tok) == vocab  # a pad token was found, not added: no resize
    assert tok.chat_template == style.template
    if style.pad is None:  # GPT-2, Llama 3, Mistral: EOS pads, and the published tokenizer says so
        assert AutoTokenizer.from_pretrained(tiny(name, "base")).pad_token is None
        assert AutoTokenizer.from_pretrained(folder).pad_token == tok.eos_token
    else:
        assert tok.pad_token == style.pad
    assert config["model_type"] == AutoModelForCausalLM.from_pretrained(folder).config.model_type


@pytest.mark.parametrize("name", EVERY)
def test_logprobs_recorded_while_sampling_match_the_forward_pass(name, tiny, prepared, monkeypatch):
    """Sampling from left-padded prompts with a KV cache, and recomputing the response's
    log-probs in one forward pass with positions from the attention mask, agree. Through
    ``model.generate`` (whose logits it records); the project's decode loop gives the same
    tokens for the same RNG state (tests/unit/test_decoding.py)."""
    monkeypatch.setattr(generation, "decodes_itself", lambda model: False)
    folder = tiny(name)
    tok = models.load_tokenizer(folder)
    model = models.load_causal_lm(folder).eval()
    rows = load_split(prepared["prompts"], "train")
    prompts = [encode_prompt(tok, rows[i]["prompt"])[-40:] for i in range(6)]
    prompts[0] = prompts[0][-5:]  # padded by at least 35 positions
    recorded: dict[str, torch.Tensor] = {}
    generate = model.generate

    def recording_generate(**kwargs):
        out = generate(**kwargs, output_logits=True, return_dict_in_generate=True)
        recorded["logits"] = torch.stack(out.logits, dim=1)
        return out.sequences

    model.generate = recording_generate
    torch.manual_seed(0)
    rollout = sample_responses(model, tok, prompts, SamplingConfig(max_new_tokens=8))
    sampled = torch.log_softmax(recorded["logits"].float(), -1)
    sampled = sampled.gather(-1, rollout.response_ids[:, : sampled.shape[1], None]).squeeze(-1)
    mask = rollout.response_mask[:, : sampled.shape[1]].bool()
    with torch.no_grad():
        args = (model, rollout.input_ids, rollout.attention_mask, rollout.prompt_width)
        recomputed, _ = response_logprobs(*args)
    recomputed = recomputed[:, : sampled.shape[1]]
    assert mask[0].any() and torch.isfinite(recomputed).all()
    torch.testing.assert_close(recomputed[mask], sampled[mask], atol=2e-4, rtol=0)
    if name == "gpt2":  # absolute positions: counting from the padding would be wrong
        with torch.no_grad():
            logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask)
        naive = torch.log_softmax(logits.logits[:, rollout.prompt_width - 1 : -1], -1)
        naive = naive.gather(-1, rollout.response_ids[..., None]).squeeze(-1)[:, : mask.shape[1]]
        assert (naive[0][mask[0]] - sampled[0][mask[0]]).abs().max() > 1e-3


@pytest.mark.parametrize("name", EVERY)
def test_grpo_trains_and_publishes(name, tiny, prepared, tmp_path):
    cfg = GRPOConfig(
        iterations=2, prompts_per_iteration=2, group_size=4, minibatch_size=8,
        reward_function=GOLD, **ON_POLICY,
    )  # fmt: skip
    out = tmp_path / "grpo"
    metrics = grpo.run(
        cfg, grpo.GRPOInputs(prepared["prompts"], tiny(name)), grpo.ModelOutputs(str(out))
    )
    assert metrics["iterations"] == 2
    _finite_causal_lm(out, ARCHITECTURES[name].tied)


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_both_reward_heads_train_and_load(name, tiny):
    scalar, log_ratio = tiny(name, "reward_scalar"), tiny(name, "reward")
    classifier = AutoModelForSequenceClassification.from_pretrained(scalar)
    tok = AutoTokenizer.from_pretrained(scalar)
    ids = torch.tensor([tok("oats, apple", add_special_tokens=False)["input_ids"]])
    assert torch.isfinite(classifier(input_ids=ids).logits).all()
    _finite_causal_lm(log_ratio, ARCHITECTURES[name].tied)
    # The frozen reference inside (weights and config; the tokenizer is the folder's).
    _finite_causal_lm(Path(log_ratio) / REFERENCE_DIR, ARCHITECTURES[name].tied, log_ratio)
    for folder in (scalar, log_ratio):
        scores = RewardScorer.load(folder, device="cpu").score(["oats, apple"] * 2, ["oats", ""])
        assert scores.shape == (2,) and torch.isfinite(scores).all()


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_ppo_trains_against_the_scalar_reward_model(name, tiny, prepared, tmp_path):
    cfg = PPOConfig(iterations=2, rollout_batch_size=8, minibatch_size=4, **ON_POLICY)
    out = tmp_path / "ppo"
    inputs = ppo.PPOInputs(prepared["prompts"], tiny(name), tiny(name, "reward_scalar"))
    assert ppo.run(cfg, inputs, ppo.ModelOutputs(str(out)))["iterations"] == 2
    _finite_causal_lm(out, ARCHITECTURES[name].tied)


@pytest.mark.parametrize("name", MATRIX_ONLY)
def test_dpo_trains_and_publishes(name, tiny, prepared, tmp_path):
    out = tmp_path / "dpo"
    inputs = dpo.DPOInputs(prepared["preferences"], tiny(name))
    metrics = dpo.run(DPOConfig(**SUPERVISED), inputs, dpo.ModelOutputs(str(out)))
    assert metrics["steps"] == 3
    _finite_causal_lm(out, ARCHITECTURES[name].tied)
