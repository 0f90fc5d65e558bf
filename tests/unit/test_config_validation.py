"""Every stage config checks its values when it is built, before any model loads: each
error names the field, what it allows and the value it got."""

import pytest

from rlhf.config import (
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    OnlineDPOConfig,
    PPOConfig,
    PrepareConfig,
    RewardConfig,
    SFTConfig,
    load_config,
)
from rlhf.modeling import models
from rlhf.stages import grpo, ppo

BAD_VALUES = [
    (PPOConfig, "policy_loss", "ppo2", r"policy_loss must be one of \('clip', 'penalty'\)"),
    (PPOConfig, "kl_estimator", "k4", r"kl_estimator must be one of \('k1', 'k2', 'k3'\)"),
    (PPOConfig, "kl_control", "pid", r"kl_control must be one of \('fixed', 'adaptive'\)"),
    (PPOConfig, "critic_init", "random", r"critic_init must be one of \('reward', 'policy'\)"),
    (PPOConfig, "rollout_batch_size", 0, "rollout_batch_size must be >= 1"),
    (PPOConfig, "ppo_epochs", 0, "ppo_epochs must be >= 1"),
    (PPOConfig, "penalty_target_kl", 0.0, "penalty_target_kl must be > 0"),
    (PPOConfig, "lam", 1.5, r"lam must be in \[0, 1\]"),
    (PPOConfig, "temperature", 0.0, "temperature must be > 0"),
    (GRPOConfig, "group_size", 1, "group_size must be >= 2"),
    (GRPOConfig, "grpo_epochs", 0, "grpo_epochs must be >= 1"),
    (GRPOConfig, "kl_coef", -0.1, "kl_coef must be >= 0"),
    (GRPOConfig, "dtype", "fp8", r"dtype must be one of \('float32', 'bfloat16', 'float16'\)"),
    (OnlineDPOConfig, "samples_per_prompt", 1, "samples_per_prompt must be >= 2"),
    (OnlineDPOConfig, "pairs", "best", r"pairs must be one of \('best_worst', 'all'\)"),
    (OnlineDPOConfig, "reference", "ppo", r"reference must be one of \('sft', 'previous_round'\)"),
    (OnlineDPOConfig, "dpo_epochs", 0, "dpo_epochs must be >= 1"),
    (OnlineDPOConfig, "beta", 0.0, "beta must be > 0"),
    (RewardConfig, "head", "linear", r"head must be one of \('log_ratio', 'scalar'\)"),
    (RewardConfig, "pooling", "max", r"pooling must be one of \('last', 'sum', 'mean'\)"),
    (RewardConfig, "beta", 0.0, "beta must be > 0"),
    (
        DPOConfig,
        "loss_type",
        "hinge",
        r"loss_type must be one of \('sigmoid', 'ipo', 'simpo', 'orpo'\)",
    ),
    (DPOConfig, "label_smoothing", 0.5, r"label_smoothing must be in \[0, 0.5\)"),
    (SFTConfig, "batch_size", 0, "batch_size must be >= 1"),
    (SFTConfig, "grad_accum", 0, "grad_accum must be >= 1"),
    (SFTConfig, "dtype", "fp8", "dtype must be one of"),
    (EvalConfig, "samples_per_prompt", 0, "samples_per_prompt must be >= 1"),
    (EvalConfig, "max_length", 32, r"max_length must exceed max_new_tokens \(32\)"),
    (EvalConfig, "top_p", 0.0, r"top_p must be in \(0, 1\]"),
    (EvalConfig, "gate_threshold", 1.5, r"gate_threshold must be in \[0, 1\]"),
    (
        EvalConfig,
        "gate_judge",
        "human",
        r"gate_judge must be one of \('auto', 'gold', 'reward_model'\)",
    ),
    (PrepareConfig, "over_budget", "cut", r"over_budget must be one of \('drop', 'truncate'\)"),
    (PrepareConfig, "validation_fraction", 1.0, r"validation_fraction must be in \[0, 1\)"),
    (PrepareConfig, "max_tokens", 0, "max_tokens must be >= 1"),
]


@pytest.mark.parametrize(("cls", "field", "value", "message"), BAD_VALUES)
def test_a_bad_value_fails_when_the_config_is_built(cls, field, value, message):
    with pytest.raises(ValueError, match=message) as raised:
        cls(**{field: value})
    assert str(raised.value).startswith(f"{cls.__name__}: ")
    assert f"got {value!r}" in str(raised.value)  # the value it got


def test_the_defaults_are_valid_and_overrides_are_checked_too():
    for cls in (
        PrepareConfig,
        SFTConfig,
        RewardConfig,
        DPOConfig,
        PPOConfig,
        GRPOConfig,
        OnlineDPOConfig,
        EvalConfig,
    ):
        cls()
    with pytest.raises(ValueError, match="kl_estimator must be one of"):
        load_config(PPOConfig, overrides={"kl_estimator": "k5"})
    with pytest.raises(ValueError, match="judge and reward_function cannot both be set"):
        OnlineDPOConfig(judge="a:b", reward_function="c:d")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as raised:
        PPOConfig(policy_loss="x", critic_init="y")
    assert "policy_loss must be" in str(raised.value)
    assert "critic_init must be" in str(raised.value)


def test_dependent_settings():
    with pytest.raises(ValueError, match="applies to loss_type 'sigmoid' only"):
        DPOConfig(loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="kl_target must be > 0 with kl_control 'adaptive'"):
        PPOConfig(kl_control="adaptive", kl_target=0.0)
    PPOConfig(kl_control="fixed", kl_target=0.0)  # unused by a fixed coefficient
    with pytest.raises(ValueError, match="max_steps must be > 0 when epochs is 0"):
        SFTConfig(epochs=0)


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    for name in ("load_causal_lm", "load_reward_model", "load_tokenizer"):
        monkeypatch.setattr(models, name, refuse)


def test_ppo_checks_its_inputs_before_loading_a_model(tmp_path, no_model_loads):
    out = ppo.ModelOutputs(str(tmp_path / "policy"))
    with pytest.raises(ValueError, match="ptx_coef > 0 needs the sft data"):
        ppo.run(PPOConfig(ptx_coef=0.5), ppo.PPOInputs("prompts", "sft", "rm"), out)
    with pytest.raises(ValueError, match="needs a reward model"):
        ppo.run(PPOConfig(), ppo.PPOInputs("prompts", "sft", ""), out)


def test_grpo_checks_its_inputs_before_loading_a_model(tmp_path, no_model_loads):
    with pytest.raises(ValueError, match="needs a reward model"):
        grpo.run(
            GRPOConfig(), grpo.GRPOInputs("prompts", "sft"), grpo.ModelOutputs(str(tmp_path / "p"))
        )
