"""Every training stage with ``--set lora.r=4``: it trains adapters only, its reference is the
model with adapters disabled (so before the first update policy and reference agree exactly:
DPO's validation margins and the RL stages' first KL are 0), and it publishes a plain merged
model or, asked, the adapter alone. A killed LoRA SFT run resumes to the same weights."""

import json

import peft
import pytest
import torch
from killed_run import assert_same_weights, kill_after_checkpoint
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf.config import (
    DPOConfig,
    GRPOConfig,
    PPOConfig,
    RewardConfig,
    SFTConfig,
    load_config,
    parse_overrides,
    to_dict,
)
from rlhf.stages import dpo, grpo, ppo, reward, sft
from rlhf.tracking import Tracker

LORA = parse_overrides(["lora.r=4", "lora.alpha=8"])  # what `--set lora.r=4 ...` passes
GOLD = "rlhf.data.demo_task:gold_reward"


def _config(cls, **fields):
    return load_config(cls, None, {**fields, **LORA})


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _assert_plain(folder, loader=AutoModelForCausalLM):
    """A merged LoRA output: plain weights in safetensors, no adapter, loadable as is."""
    keys = load_file(folder / "model.safetensors").keys()
    assert not any("lora" in k or k.startswith("base_model.model") for k in keys)
    assert not (folder / "adapter_config.json").exists()
    loader.from_pretrained(folder)
    assert _manifest(folder)["lora"] == {"r": 4, "alpha": 8.0, "publish": "merged"}


RUN_SFT = """
import json, sys
from rlhf.config import SFTConfig, from_dict
from rlhf.stages import sft
sft.run(from_dict(SFTConfig, json.loads(sys.argv[1])), sft.SFTInputs(sys.argv[2]),
        sft.ModelOutputs(sys.argv[3]))
"""


def test_lora_sft_publishes_a_plain_model_and_resumes_after_a_kill(prepared, tmp_path):
    cfg = _config(
        SFTConfig, base_model="preset:micro-llama", batch_size=16, max_steps=4,
        checkpoint_every=2, eval_every=0, lr=3e-3,
    )  # fmt: skip
    assert cfg.lora.r == 4
    out = tmp_path / "killed" / "model"
    args = [json.dumps(to_dict(cfg)), prepared["sft"], str(out)]
    kill_after_checkpoint(RUN_SFT, args, tmp_path / "killed" / "model.checkpoints", 2)
    tracker = Tracker()
    resumed = sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(out)), tracker)
    assert int(tracker.tags["resumed_from_step"]) >= 2

    clean_out = tmp_path / "clean" / "model"
    clean = sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(clean_out)))
    assert resumed["steps"] == clean["steps"] == 4
    assert clean["val_loss"] < clean["val_loss_start"]
    _assert_plain(clean_out)
    assert_same_weights(out, clean_out)


@pytest.mark.parametrize("head", ["log_ratio", "scalar"])
def test_lora_reward_model_both_heads(prepared, micro_models, tmp_path, head):
    cfg = _config(RewardConfig, head=head, batch_size=16, max_steps=4, eval_every=0, lr=5e-4)
    tracker = Tracker()
    out = tmp_path / "rm"
    reward.run(cfg, reward.RewardInputs(prepared["preferences"], micro_models["sft"]),
               reward.ModelOutputs(str(out)), tracker)  # fmt: skip
    if head == "log_ratio":
        # The reference is the model with adapters disabled: at step 0 (adapters' B = 0)
        # every validation margin is exactly 0.
        assert tracker.history("val/mean_margin")[0] == 0.0
        assert (out / "reference" / "model.safetensors").exists()
    _assert_plain(out, AutoModelForCausalLM if head == "log_ratio" else
                  AutoModelForSequenceClassification)  # fmt: skip


def test_lora_dpo_references_its_base_and_publishes_the_adapter(prepared, micro_models, tmp_path):
    cfg = load_config(DPOConfig, None, {
        "batch_size": 16, "max_steps": 6, "eval_every": 0, "lr": 5e-3,
        **LORA, "lora.publish": "adapter",
    })  # fmt: skip
    tracker = Tracker()
    out = tmp_path / "dpo"
    dpo.run(cfg, dpo.DPOInputs(prepared["preferences"], micro_models["sft"]),
            dpo.ModelOutputs(str(out)), tracker)  # fmt: skip
    assert tracker.history("val/rewards/margin")[0] == 0.0  # policy = reference at step 0
    assert tracker.history("val/rewards/margin")[-1] != 0.0
    manifest = _manifest(out)
    assert manifest["lora_base_model"] == micro_models["sft"]
    assert not (out / "model.safetensors").exists()
    sft_model = AutoModelForCausalLM.from_pretrained(micro_models["sft"])
    ids = torch.tensor([[5, 9, 17, 3, 40, 41]])
    with torch.no_grad():
        base_logits = sft_model(input_ids=ids).logits
        tuned = peft.PeftModel.from_pretrained(sft_model, out).eval()
        assert not torch.allclose(tuned(input_ids=ids).logits, base_logits)


PPO_FAST = dict(
    rollout_batch_size=4, minibatch_size=4, ppo_epochs=1, max_new_tokens=8, lr=1e-3,
    critic_lr=1e-3, warmup_iterations=0, sample_every=100,
)  # fmt: skip


def test_lora_ppo_trains_policy_and_critic_adapters(prepared, micro_models, tmp_path):
    cfg = _config(PPOConfig, iterations=2, gold_reward=GOLD, **PPO_FAST)
    tracker = Tracker()
    out = tmp_path / "ppo"
    inputs = ppo.PPOInputs(prepared["prompts"], micro_models["sft"], micro_models["reward_scalar"])
    ppo.run(cfg, inputs, ppo.ModelOutputs(str(out)), tracker)
    kl = tracker.history("kl/mean")
    assert kl[0] == 0.0 and kl[1] != 0.0  # the reference is the untrained policy's base
    _assert_plain(out)


def test_lora_grpo(prepared, micro_models, tmp_path):
    cfg = _config(
        GRPOConfig, iterations=2, reward_function=GOLD, prompts_per_iteration=2, group_size=4,
        minibatch_size=8, grpo_epochs=1, max_new_tokens=8, lr=1e-3, warmup_iterations=0,
        sample_every=100,
    )  # fmt: skip
    tracker = Tracker()
    out = tmp_path / "grpo"
    grpo.run(cfg, grpo.GRPOInputs(prepared["prompts"], micro_models["sft"]),
             grpo.ModelOutputs(str(out)), tracker)  # fmt: skip
    kl = tracker.history("kl/mean")
    assert kl[0] == 0.0 and kl[1] != 0.0
    _assert_plain(out)


def test_qlora_off_cuda_fails_before_training(prepared, micro_models, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config(SFTConfig, None, {
        "base_model": "preset:micro-llama", **LORA, "lora.quantize_4bit": "true",
        "lora.publish": "adapter",
    })  # fmt: skip
    with pytest.raises(ValueError, match="preset"):  # nothing to quantize, said first
        sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(tmp_path / "a")))
    cfg = load_config(DPOConfig, None, {**LORA, "lora.quantize_4bit": "true",
                                        "lora.publish": "adapter"})  # fmt: skip
    with pytest.raises(ValueError, match="needs CUDA and bitsandbytes"):
        dpo.run(cfg, dpo.DPOInputs(prepared["preferences"], micro_models["sft"]),
                dpo.ModelOutputs(str(tmp_path / "b")))  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_qlora_off_cuda_is_a_one_line_cli_error(prepared, micro_models, tmp_path, monkeypatch,
                                                capsys):  # fmt: skip
    """The command names the setting and exits 2 (a settings mistake), with no traceback."""
    from rlhf.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["dpo", "--no-track", "--preferences", prepared["preferences"],
                 "--sft-model", micro_models["sft"], "--out", str(tmp_path / "q"),
                 "--set", "lora.r=4", "--set", "lora.quantize_4bit=true",
                 "--set", "lora.publish=adapter"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "rlhf dpo: lora.quantize_4bit (QLoRA) needs CUDA and bitsandbytes: no CUDA" in err
    assert "Traceback" not in err
    assert not (tmp_path / "q").exists()
