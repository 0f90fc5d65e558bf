"""Rollouts sampled by vLLM (``rollout_backend: vllm``), on CPU against tests/fakes/vllm: the
engine is built from the policy's architecture alone, the policy's weights (adapters merged)
replace its weights before every rollout, sampling is seeded from torch's RNG, and the stages
learn from what it samples. vLLM on a GPU is not exercised here (docs/scaling.md says what
was checked where)."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhf.config import GRPOConfig, LoraConfig, OnlineDPOConfig, PPOConfig
from rlhf.modeling import lora, models
from rlhf.modeling.generation import rollout_from_responses
from rlhf.stages import grpo, online_dpo, ppo
from rlhf.stages.rollout_sampler import RolloutSampler, rollout_backend
from rlhf.tracking import Tracker

FAKES = Path(__file__).parent.parent / "fakes"
GOLD = "rlhf.data.demo_task:gold_reward"
CPU = torch.device("cpu")


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("vllm", "vllm.platforms"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import vllm

    vllm.LLM.built.clear()
    yield vllm
    for name in ("vllm", "vllm.platforms"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_the_backend_is_torch_unless_vllm_is_asked_for_or_there_with_a_gpu(fake_vllm):
    assert rollout_backend(GRPOConfig(), CPU) == "torch"  # auto: vLLM only on a CUDA GPU
    assert rollout_backend(GRPOConfig(), torch.device("cuda")) == "vllm"
    assert rollout_backend(GRPOConfig(rollout_backend="vllm"), CPU) == "vllm"
    assert rollout_backend(GRPOConfig(rollout_backend="torch"), torch.device("cuda")) == "torch"


def test_vllm_asked_for_but_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert rollout_backend(GRPOConfig(), torch.device("cuda")) == "torch"
    with pytest.raises(RuntimeError, match=r"vLLM is not installed: pip install 'rlhf\[vllm\]'"):
        rollout_backend(GRPOConfig(rollout_backend="vllm"), CPU)


def test_bad_vllm_settings_fail_when_the_config_is_built():
    with pytest.raises(ValueError, match="rollout_backend must be one of"):
        GRPOConfig(rollout_backend="sglang")
    with pytest.raises(ValueError, match=r"vllm_gpu_memory must be in \(0, 1\), got 1.5"):
        GRPOConfig(vllm_gpu_memory=1.5)
    with pytest.raises(ValueError, match="cannot be vllm with lora.quantize_4bit"):
        GRPOConfig(
            rollout_backend="vllm", lora=LoraConfig(r=4, quantize_4bit=True, publish="adapter")
        )


def test_responses_from_elsewhere_become_the_rollout_sample_responses_gives():
    eos, pad = 2, 2  # padding with EOS itself, as many tokenizers do
    rollout = rollout_from_responses([[5, 6, 7], [8]], [[9, 2, 4], [10, 11]], eos, pad)
    assert rollout.prompt_width == 3
    assert rollout.input_ids.tolist() == [[5, 6, 7, 9, 2], [2, 2, 8, 10, 11]]  # cut after EOS
    assert rollout.response_mask.tolist() == [[1, 1], [1, 1]]
    assert rollout.ended.tolist() == [True, False]  # the second was cut at max_new_tokens
    assert rollout.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    short = rollout_from_responses([[5], [6]], [[2], [7, 8, 9]], eos, pad)
    assert short.response_mask.tolist() == [[1, 0, 0], [1, 1, 1]]  # EOS padding: not the answer
    assert short.ended.tolist() == [True, False]


def _sampler(folder, config, lora_config=None):
    policy = models.load_causal_lm(folder)
    if lora_config is not None:
        policy = lora.apply_lora(policy, lora_config)
    engine = SimpleNamespace(model=policy)
    return RolloutSampler(engine, models.load_tokenizer(folder), config, CPU), policy


@pytest.mark.parametrize("lora_r", [0, 4])
def test_every_rollout_samples_from_the_policys_weights_as_they_are_now(
    lora_r, fake_vllm, micro_models
):
    config = GRPOConfig(rollout_backend="vllm", max_new_tokens=6, max_prompt_length=32)
    lora_config = LoraConfig(r=lora_r) if lora_r else None
    sampler, policy = _sampler(micro_models["sft"], config, lora_config)
    (llm,) = fake_vllm.LLM.built
    assert llm.settings["load_format"] == "dummy"  # no checkpoint: the weights come from us
    assert llm.settings["distributed_executor_backend"] == "external_launcher"
    assert llm.settings["max_model_len"] == 32 + 6
    assert llm.settings["dtype"] == "float32" and llm.settings["gpu_memory_utilization"] == 0.3
    assert llm.settings["enable_sleep_mode"] and llm.asleep  # asleep until the first rollout

    prompts = [[5, 6, 7], [8, 9]]
    rollout = sampler.sample(prompts)
    assert not llm.model.config.tie_word_embeddings  # the engine's head: its own copy
    assert llm.loads == [set(dict(llm.model.named_parameters()))]  # every weight of the engine
    assert llm.prefix_cache_resets == 1
    assert llm.asleep == {"weights", "kv_cache"} and llm.sleeps == 2  # its memory released
    assert rollout.input_ids.shape[0] == 2 and rollout.prompt_width == 3

    with torch.no_grad():  # an update: the next rollout must see it
        for param in policy.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    llm.sleep = lambda level: None  # stays awake after this one: its weights can be looked at
    sampler.sample(prompts)
    assert len(llm.loads) == 2
    engine_weights = dict(llm.model.named_parameters())
    for name, value in lora.merged_weights(policy):
        assert torch.equal(engine_weights[name], value), name
    head, embedding = engine_weights["lm_head.weight"], engine_weights["model.embed_tokens.weight"]
    assert torch.equal(head, embedding) and head.data_ptr() != embedding.data_ptr()


def test_a_policy_fresh_from_a_preset_gets_an_engine_with_its_head(fake_vllm, micro_models):
    """A preset's config names no architecture (only saving a model writes one): the engine
    must still be told the causal LM, not the bare model."""
    tokenizer = models.load_tokenizer(micro_models["sft"])
    policy = models.build_from_preset("preset:micro-llama", tokenizer, max_length=64)
    assert not policy.config.architectures
    engine = SimpleNamespace(model=policy)
    sampler = RolloutSampler(engine, tokenizer, GRPOConfig(rollout_backend="vllm"), CPU)
    assert sampler.sample([[5, 6, 7]]).input_ids.shape[0] == 1


def test_without_sleep_the_engine_keeps_its_memory(fake_vllm, micro_models):
    config = GRPOConfig(rollout_backend="vllm", max_new_tokens=4, vllm_sleep=False)
    sampler, _ = _sampler(micro_models["sft"], config)
    (llm,) = fake_vllm.LLM.built
    sampler.sample([[5, 6, 7]])
    sampler.sample([[5, 6, 7]])
    assert not llm.settings["enable_sleep_mode"] and llm.sleeps == 0 and not llm.asleep
    assert len(llm.loads) == 2


def test_where_vllm_cannot_sleep_the_engine_stays_awake(fake_vllm, micro_models, monkeypatch):
    from vllm.platforms import SLEEP_MODE

    monkeypatch.setitem(SLEEP_MODE, "available", False)  # as on vLLM's CPU build
    sampler, _ = _sampler(micro_models["sft"], GRPOConfig(rollout_backend="vllm"))
    (llm,) = fake_vllm.LLM.built
    sampler.sample([[5, 6, 7]])
    assert not llm.settings["enable_sleep_mode"] and llm.sleeps == 0


def test_sampling_is_seeded_from_torchs_rng(fake_vllm, micro_models):
    config = GRPOConfig(rollout_backend="vllm", max_new_tokens=8)
    sampler, _ = _sampler(micro_models["sft"], config)
    prompts = [[5, 6, 7]] * 4
    torch.manual_seed(3)
    first = sampler.sample(prompts).input_ids
    torch.manual_seed(3)
    assert torch.equal(sampler.sample(prompts).input_ids, first)  # a resumed run: the same
    assert not torch.equal(sampler.sample(prompts).input_ids, first)  # the RNG moved on
    assert len({tuple(row.tolist()) for row in first}) > 1  # each request its own seed


def test_grpo_learns_from_vllm_rollouts(fake_vllm, prepared, micro_models, tmp_path):
    """The fake engine starts from random weights: only if the policy's weights reach it
    before every rollout do the rollouts improve as the policy learns."""
    tracker = Tracker()
    cfg = GRPOConfig(
        iterations=12, reward_function=GOLD, rollout_backend="vllm", prompts_per_iteration=4,
        group_size=4, minibatch_size=8, max_new_tokens=10, lr=1e-3, warmup_iterations=0,
        sample_every=0, checkpoint_every=0,
    )  # fmt: skip
    inputs = grpo.GRPOInputs(prepared["prompts"], micro_models["sft"])
    grpo.run(cfg, inputs, grpo.ModelOutputs(str(tmp_path / "policy")), tracker)
    (llm,) = fake_vllm.LLM.built
    assert len(llm.loads) == 12 and llm.requests == 12 * 16
    assert llm.sleeps == 1 + 12  # after it was built, then after every rollout
    # Shut down when the loop ended, the process group it shares with the stage kept.
    assert llm.closed and torch.distributed.is_initialized()
    scores = tracker.history("reward/score_mean")
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.1


@pytest.mark.parametrize("stage", ["ppo", "online_dpo"])
def test_ppo_and_online_dpo_roll_out_with_vllm(stage, fake_vllm, prepared, micro_models, tmp_path):
    common = dict(iterations=2, rollout_backend="vllm", max_new_tokens=6, warmup_iterations=0,
                  sample_every=0, checkpoint_every=0)  # fmt: skip
    out = ppo.ModelOutputs(str(tmp_path / "policy"))
    if stage == "ppo":
        cfg = PPOConfig(rollout_batch_size=4, minibatch_size=4, **common)
        ppo.run(cfg, ppo.PPOInputs(prepared["prompts"], micro_models["sft"],
                                   micro_models["reward"]), out)  # fmt: skip
        rows = 2 * 4
    else:
        cfg = OnlineDPOConfig(prompts_per_iteration=4, samples_per_prompt=2, **common)
        online_dpo.run(cfg, online_dpo.OnlineDPOInputs(prepared["prompts"], micro_models["sft"],
                                                       micro_models["reward"]), out)  # fmt: skip
        rows = 2 * 4 * 2
    (llm,) = fake_vllm.LLM.built
    assert len(llm.loads) == 2 and llm.requests == rows


def _failing_reward(prompt, response):
    raise RuntimeError("the reward function broke")


def test_the_engine_is_shut_down_when_the_loop_fails(fake_vllm, prepared, micro_models, tmp_path):
    cfg = GRPOConfig(
        iterations=2, reward_function=f"{__name__}:_failing_reward", rollout_backend="vllm",
        prompts_per_iteration=2, group_size=2, minibatch_size=4, max_new_tokens=4,
        sample_every=0, checkpoint_every=0,
    )  # fmt: skip
    inputs = grpo.GRPOInputs(prepared["prompts"], micro_models["sft"])
    with pytest.raises(RuntimeError, match="the reward function broke"):
        grpo.run(cfg, inputs, grpo.ModelOutputs(str(tmp_path / "policy")), Tracker())
    (llm,) = fake_vllm.LLM.built
    assert llm.closed
