"""The torch decode loop sampling from a copy of the policy (``rollout_weights``): in the dtype
the policy computes in, LoRA's adapters merged, holding the policy's weights as they are at
each rollout, built without touching the stage's random stream; sampled from as the policy
itself would be sampled from."""

import pytest
import torch

from rlhf.config import DistributedConfig, GRPOConfig, LoraConfig
from rlhf.modeling import lora, models
from rlhf.modeling.generation import sample_responses
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.training.engine import DeepSpeedEngine, Engine, TorchEngine

CPU = torch.device("cpu")
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]


def _sampler(folder, config):
    policy = models.load_causal_lm(folder)
    if config.lora.r:
        policy = lora.apply_lora(policy, config.lora)
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "weight_decay": 0.0}]
    engine = TorchEngine(policy, groups, 1e-3, 1.0, config.distributed, CPU)
    return RolloutSampler(engine, models.load_tokenizer(folder), config, CPU), policy


def _nudge(policy: torch.nn.Module) -> None:
    """An update: every trainable weight moves (LoRA's B starts at zero: the adapters count)."""
    with torch.no_grad():
        for param in policy.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))


def test_under_bf16_autocast_the_copy_is_bf16_and_holds_the_weights_of_each_rollout(
    micro_models,
):
    config = GRPOConfig(max_new_tokens=6, distributed=DistributedConfig(precision="bf16"))
    sampler, policy = _sampler(micro_models["sft"], config)
    assert sampler.copy is not None and sampler.copy.dtype == torch.bfloat16
    for _ in range(2):
        _nudge(policy)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rollout = sampler.sample(PROMPTS)
        assert rollout.input_ids.shape[0] == len(PROMPTS)
        held = dict(sampler.copy.model.named_parameters())
        for name, param in policy.named_parameters():
            assert held[name].dtype == torch.bfloat16
            assert torch.equal(held[name], param.to(torch.bfloat16)), name
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # the policy untouched


def test_a_lora_policys_copy_samples_what_the_policy_samples(micro_models):
    """fp32, adapters merged into the copy: the same tokens from the same random stream (the
    merged and the adapted forward differ in the last bits only)."""
    config = GRPOConfig(max_new_tokens=8, rollout_weights="copy", lora=LoraConfig(r=4))
    sampler, policy = _sampler(micro_models["sft"], config)
    assert sampler.copy is not None and sampler.copy.dtype == torch.float32
    _nudge(policy)
    torch.manual_seed(3)
    from_copy = sampler.sample(PROMPTS)
    after_copy = torch.get_rng_state()
    torch.manual_seed(3)
    from_policy = sample_responses(policy, sampler.tokenizer, PROMPTS, sampler.sampling)
    assert torch.equal(from_copy.input_ids, from_policy.input_ids)
    assert torch.equal(from_copy.response_mask, from_policy.response_mask)
    assert torch.equal(after_copy, torch.get_rng_state())  # as many draws
    assert not hasattr(sampler.copy.model, "peft_config")  # a plain transformers model


def test_building_the_copy_leaves_the_random_stream_alone(micro_models):
    torch.manual_seed(11)
    before = torch.get_rng_state()
    config = GRPOConfig(rollout_weights="copy")
    sampler, _ = _sampler(micro_models["sft"], config)
    assert sampler.copy is not None
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize(
    ("weights", "precision", "copied"),
    [("auto", "fp32", False), ("auto", "fp16", True), ("policy", "bf16", False)],
)
def test_auto_copies_only_under_autocast(micro_models, weights, precision, copied):
    config = GRPOConfig(rollout_weights=weights, distributed=DistributedConfig(precision=precision))
    sampler, _ = _sampler(micro_models["sft"], config)
    assert (sampler.copy is not None) == copied


def test_auto_samples_from_the_policy_under_deepspeed():
    """DeepSpeed's bf16 engine holds half weights itself (and ZeRO-3 shards them): it casts
    nothing under autocast, as the base engine it inherits that from."""
    config = GRPOConfig(distributed=DistributedConfig(precision="bf16", zero_stage=2))
    engine = Engine(torch.nn.Linear(2, 2), config.distributed, CPU)
    assert "autocast_dtype" not in vars(DeepSpeedEngine)
    assert RolloutSampler(engine, None, config, CPU).copy is None


def test_a_copy_that_cannot_be_made_fails_when_the_config_is_built():
    with pytest.raises(ValueError, match="rollout_weights must be one of"):
        GRPOConfig(rollout_weights="half")
    with pytest.raises(ValueError, match="rollout_weights cannot be copy under DeepSpeed"):
        GRPOConfig(rollout_weights="copy", distributed=DistributedConfig(zero_stage=3))
    with pytest.raises(ValueError, match="rollout_weights cannot be copy"):
        GRPOConfig(
            rollout_weights="copy",
            lora=LoraConfig(r=4, quantize_4bit=True, publish="adapter"),
        )
