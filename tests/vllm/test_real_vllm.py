"""Rollouts sampled by vLLM itself (its CPU build), the calls ``modeling/vllm_sampler.py``
makes checked against the real engine rather than the stand-in of make test: the engine built
from the policy's architecture alone takes the policy's weights (adapters merged) before every
rollout, and samples what the policy would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.config import GRPOConfig, LoraConfig, OnlineDPOConfig, PPOConfig
from rlhf.modeling import lora, models
from rlhf.modeling.generation import SamplingConfig, sample_responses
from rlhf.stages import grpo, online_dpo, ppo
from rlhf.stages.rollout_sampler import RolloutSampler

pytestmark = pytest.mark.vllm

CPU = torch.device("cpu")
SAMPLING = SamplingConfig(max_new_tokens=12)


def _greedy_decode_loop(policy, tokenizer, prompts) -> list[list[int]]:
    """The policy's own greedy responses (the project's decode loop), up to EOS."""
    rollout = sample_responses(policy, tokenizer, prompts, SAMPLING, greedy=True)
    width = rollout.prompt_width
    return [row[width:][mask.bool()].tolist()
            for row, mask in zip(rollout.input_ids, rollout.response_mask, strict=True)]  # fmt: skip


def _greedy_vllm(sampler: RolloutSampler, policy, prompts) -> list[list[int]]:
    sampler.vllm.load_weights(lora.merged_weights(policy))
    responses = sampler.vllm.sample(prompts, SAMPLING, seed=0, greedy=True)
    eos = sampler.tokenizer.eos_token_id
    return [r[: r.index(eos) + 1] if eos in r else r for r in responses]


@pytest.fixture
def make_sampler(policy_folder):
    """Builds a RolloutSampler with vLLM for a policy; each is shut down when the test ends
    (left to the garbage collector, an engine's shutdown would come during a later test)."""
    from types import SimpleNamespace

    built: list[RolloutSampler] = []

    def make(policy, tokenizer=None) -> RolloutSampler:
        config = GRPOConfig(rollout_backend="vllm", max_new_tokens=12)
        tokenizer = tokenizer or models.load_tokenizer(policy_folder)
        built.append(RolloutSampler(SimpleNamespace(model=policy), tokenizer, config, CPU))
        return built[-1]

    yield make
    for sampler in built:
        sampler.close()


def test_the_engine_samples_the_policys_greedy_responses_after_every_update(
    policy_folder, prompts, make_sampler
):
    policy = models.load_causal_lm(policy_folder)
    sampler = make_sampler(policy)
    before = _greedy_decode_loop(policy, sampler.tokenizer, prompts)
    assert _greedy_vllm(sampler, policy, prompts) == before

    for _ in range(2):  # an update, then another: each must reach the engine
        torch.manual_seed(len(before))
        with torch.no_grad():
            for param in policy.parameters():
                param.add_(0.5 * param.std() * torch.randn_like(param))
        after = _greedy_decode_loop(policy, sampler.tokenizer, prompts)
        assert after != before  # the update changed what the policy says
        assert _greedy_vllm(sampler, policy, prompts) == after
        before = after


def test_a_lora_policy_reaches_the_engine_merged_and_stays_unmerged(
    policy_folder, prompts, make_sampler
):
    policy = lora.apply_lora(models.load_causal_lm(policy_folder), LoraConfig(r=4))
    torch.manual_seed(0)
    with torch.no_grad():  # trained adapters: B is zero when they start
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    base = {n: p.clone() for n, p in lora.unwrap(policy).named_parameters() if "lora" not in n}
    sampler = make_sampler(policy)
    plain = _greedy_decode_loop(models.load_causal_lm(policy_folder), sampler.tokenizer, prompts)
    adapted = _greedy_decode_loop(policy, sampler.tokenizer, prompts)
    assert adapted != plain
    assert _greedy_vllm(sampler, policy, prompts) == adapted
    for name, param in lora.unwrap(policy).named_parameters():
        if name in base:
            assert torch.equal(param, base[name]), name  # merged aside, not into the policy


# tests/tiny_models.py's shapes, widened to heads of 32 (vLLM's CPU attention takes 32 and up).
WIDE = {"gpt2": dict(n_embd=64, n_inner=128)}
WIDE_DEFAULT = dict(hidden_size=64, intermediate_size=128, head_dim=32)


@pytest.mark.parametrize("name", ["qwen2", "gpt2", "gemma"])
def test_other_architectures_sample_their_own_greedy_responses(name, make_sampler):
    """Qwen2 (attention biases), GPT-2 (fused attention projection, absolute positions, tied
    head) and Gemma (tied head, scaled embeddings): the engine built from each config and
    handed the model's weights gives the model's greedy responses."""
    from tiny_models import ARCHITECTURES, STYLES, styled_tokenizer
    from transformers import AutoModelForCausalLM

    arch = ARCHITECTURES[name]
    tokenizer = styled_tokenizer(STYLES[arch.style], ["salt and pepper", "a cup of tea"] * 50)
    if tokenizer.pad_token is None:  # GPT-2's has none: the stages pad with EOS then
        tokenizer.pad_token = tokenizer.eos_token
    config = arch.config(tokenizer)
    config.update(WIDE.get(name, WIDE_DEFAULT))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert model.config.tie_word_embeddings == arch.tied
    sampler = make_sampler(model, tokenizer)
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    assert _greedy_vllm(sampler, model, prompts) == _greedy_decode_loop(model, tokenizer, prompts)


def test_sampling_is_seeded_from_torchs_rng_and_ends_at_eos(policy_folder, prompts, make_sampler):
    policy = models.load_causal_lm(policy_folder)
    sampler = make_sampler(policy)
    prompts = prompts * 2
    torch.manual_seed(3)
    first = sampler.sample(prompts)
    torch.manual_seed(3)
    assert torch.equal(sampler.sample(prompts).input_ids, first.input_ids)  # a resumed run
    assert not torch.equal(sampler.sample(prompts).input_ids, first.input_ids)
    eos = sampler.tokenizer.eos_token_id
    width = first.prompt_width
    for row, mask, ended in zip(first.input_ids, first.response_mask, first.ended, strict=True):
        response = row[width:][mask.bool()].tolist()
        assert (response[-1] == eos) == bool(ended) and eos not in response[:-1]


SHORT = dict(iterations=2, max_new_tokens=8, warmup_iterations=0, sample_every=0,
             checkpoint_every=0, rollout_backend="vllm")  # fmt: skip


def _history(folder: Path) -> list[dict[str, float]]:
    return json.loads((folder / grpo.HISTORY_FILE).read_text())


@pytest.mark.parametrize("stage", ["grpo", "ppo", "online_dpo"])
def test_each_on_policy_stage_trains_on_vllm_rollouts(
    stage, policy_folder, prepared, micro_models, tmp_path
):
    """The stage runs end to end with vLLM sampling (one engine, shut down when the loop
    ends, the process group kept for publishing). The reward model is the micro one: only
    the policy goes through vLLM."""
    out = tmp_path / "policy"
    if stage == "grpo":
        cfg = GRPOConfig(
            reward_function="rlhf.data.demo_task:gold_reward",
            prompts_per_iteration=4,
            group_size=4,
            minibatch_size=8,
            **SHORT,
        )
        grpo.run(cfg, grpo.GRPOInputs(prepared["prompts"], policy_folder),
                 grpo.ModelOutputs(str(out)))  # fmt: skip
    elif stage == "ppo":
        cfg = PPOConfig(rollout_batch_size=4, minibatch_size=4, **SHORT)
        ppo.run(cfg, ppo.PPOInputs(prepared["prompts"], policy_folder, micro_models["reward"]),
                ppo.ModelOutputs(str(out)))  # fmt: skip
    else:
        cfg = OnlineDPOConfig(prompts_per_iteration=4, samples_per_prompt=2, **SHORT)
        online_dpo.run(cfg, online_dpo.OnlineDPOInputs(prepared["prompts"], policy_folder,
                                                       micro_models["reward"]),
                       online_dpo.ModelOutputs(str(out)))  # fmt: skip
    history = _history(out)
    assert [row["step"] for row in history] == [1, 2]
    # vLLM's shutdown ends the default process group; the stage kept the one it shares.
    assert torch.distributed.is_initialized()
    assert all(0 < row["response/length_mean"] <= 8 for row in history)


def test_grpo_on_two_ranks_each_with_its_engine(policy_folder, prepared, tmp_path):
    """``torchrun --nproc_per_node 2``: each rank builds an engine in the process group the
    stage started and samples its share of the prompts; the ranks still meet to publish
    after their engines are shut down."""
    out = tmp_path / "policy"
    args = ["grpo", "--prompts", prepared["prompts"], "--sft-model", policy_folder,
            "--out", str(out), "--no-track",
            "--set", "reward_function=rlhf.data.demo_task:gold_reward",
            "--set", "rollout_backend=vllm", "--set", "iterations=2",
            "--set", "prompts_per_iteration=4", "--set", "group_size=2",
            "--set", "minibatch_size=4", "--set", "max_new_tokens=8",
            "--set", "checkpoint_every=0"]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "rlhf", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 ranks on 2 shared cores
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    assert done.stderr.count("rollouts sampled by vLLM") == 2  # one engine per rank
    assert len(_history(out)) == 2
