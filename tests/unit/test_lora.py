"""LoRA (modeling/lora.py): only adapters train, the base stays bitwise the same, the merged
output is a plain transformers model, adapters_disabled is the base, an adapter alone loads with
peft, and QLoRA off CUDA is a clear error."""

import json

import peft
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf.config import DistributedConfig, LoraConfig, SFTConfig
from rlhf.modeling import lora, models
from rlhf.modeling.forward import TokenValues, response_values
from rlhf.modeling.tokenizer import train_bpe_tokenizer

# micro-llama: hidden 32, MLP 64, one layer. "all-linear" puts rank-4 adapters on q, k, v, o
# (32 -> 32: 4 x (32 + 32) each), gate and up (32 -> 64) and down (64 -> 32): 4 x (32 + 64)
# each. 4 x 256 + 3 x 384 = 2176 parameters; the tied LM head gets none.
MICRO_ADAPTER_PARAMS = 4 * 256 + 3 * 384
IDS = torch.tensor([[5, 9, 17, 3, 40, 41], [7, 7, 8, 21, 30, 2]])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A saved micro-llama folder and its tokenizer."""
    folder = tmp_path_factory.mktemp("base")
    tok = train_bpe_tokenizer(["onion, garlic, beef, rice"] * 20, vocab_size=280)
    torch.manual_seed(0)
    models.save_pretrained(models.build_from_preset("preset:micro-llama", tok, 64), tok, folder)
    return folder, tok


def _trained(model, steps=3):
    """A few AdamW steps on the trainable parameters (the lm loss on IDS)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
        opt.zero_grad()
    return model


def test_r0_leaves_the_model_itself():
    model = torch.nn.Linear(2, 2)
    assert lora.apply_lora(model, LoraConfig()) is model
    with lora.adapters_disabled(model):
        pass
    assert lora.publishable(model, LoraConfig(), "x") == (model, {})


def test_only_adapters_train_and_the_base_is_unchanged(base):
    folder, _ = base
    model = lora.apply_lora(models.load_causal_lm(str(folder)), LoraConfig(r=4))
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == MICRO_ADAPTER_PARAMS
    assert all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    _trained(model)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())
    lora_b = [n for n in trainable if "lora_B" in n]
    assert lora_b and all(not torch.equal(after[n], trainable[n]) for n in lora_b)


def test_merged_output_is_a_plain_model_with_the_lora_logits(base, tmp_path):
    folder, tok = base
    cfg = LoraConfig(r=4, alpha=8)
    model = _trained(lora.apply_lora(models.load_causal_lm(str(folder)), cfg)).eval()
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        lora_logits = model(input_ids=IDS).logits
        with lora.adapters_disabled(model):  # the base model, exactly
            assert torch.equal(model(input_ids=IDS).logits, plain(input_ids=IDS).logits)
        assert not torch.allclose(lora_logits, plain(input_ids=IDS).logits)

    merged, fields = lora.publishable(model, cfg, str(folder))
    assert fields == {"lora": {"r": 4, "alpha": 8.0, "publish": "merged"}}
    models.save_pretrained(merged, tok, tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert not any("lora" in k or k.startswith("base_model") for k in keys)
    assert not (tmp_path / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, lora_logits, atol=1e-5, rtol=0)


def test_adapter_output_loads_with_peft_onto_its_base(base, tmp_path):
    folder, tok = base
    cfg = LoraConfig(r=4, publish="adapter", target_modules=["q_proj", "v_proj"])
    model = _trained(lora.apply_lora(models.load_causal_lm(str(folder)), cfg)).eval()
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    saved, fields = lora.publishable(model, cfg, str(folder))
    assert fields["lora_base_model"] == str(folder)
    models.save_pretrained(saved, tok, tmp_path)
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    adapter_config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(folder)
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    again = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=IDS).logits, expected)


def test_a_lora_reward_model_trains_its_score_head_and_merges_it(base, tmp_path):
    folder, tok = base
    model = models.load_reward_model(str(folder))
    model.config.pad_token_id = tok.pad_token_id
    model = lora.apply_lora(model, LoraConfig(r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("score" in n and "lora_" not in n for n in trainable)  # the whole head
    # A critic's values go through the wrapped model's backbone and head.
    mask = torch.ones_like(IDS)
    assert response_values(TokenValues(model), IDS, mask, 2).shape == (2, 4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        model(input_ids=IDS).logits.sum().backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        expected = model.eval()(input_ids=IDS).logits
    merged, _ = lora.publishable(model, LoraConfig(r=4), str(folder))
    models.save_pretrained(merged, tok, tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, expected, atol=1e-5, rtol=0)


def test_qlora_needs_cuda_and_bitsandbytes_and_an_adapter_to_publish(monkeypatch):
    cfg = LoraConfig(r=4, quantize_4bit=True, publish="adapter")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="quantize_4bit.*needs CUDA and bitsandbytes: no CUDA"):
        lora.quantization_config(cfg, "float32")
    assert lora.quantization_config(LoraConfig(r=4), "float32") is None
    with pytest.raises(ValueError, match="publish.*must be 'adapter' with quantize_4bit"):
        LoraConfig(r=4, quantize_4bit=True)
    # 4-bit weights are not partitioned by ZeRO-3; LoRA on full-precision weights is.
    with pytest.raises(ValueError, match="quantize_4bit.*cannot be combined with .*zero_stage 3"):
        SFTConfig(lora=cfg, distributed=DistributedConfig(zero_stage=3))
    SFTConfig(lora=LoraConfig(r=4), distributed=DistributedConfig(zero_stage=3))


def test_a_preset_base_cannot_publish_an_adapter_or_be_quantized():
    with pytest.raises(ValueError, match="preset.*publish 'merged'"):
        lora.check_preset_base(LoraConfig(r=4, publish="adapter"), "preset:micro-llama")
    lora.check_preset_base(LoraConfig(r=4), "preset:micro-llama")  # merged: fine
    lora.check_preset_base(LoraConfig(r=4, publish="adapter"), "/models/sft")


def test_merged_weights_are_the_merged_model_under_its_names_and_leave_it_as_it_was(base):
    """What the rollout engine (vLLM) loads: the merged model's weights, by the plain model's
    names, computed aside (the LoRA model's own weights stay bit for bit)."""
    folder, _ = base
    model = _trained(lora.apply_lora(models.load_causal_lm(str(folder)), LoraConfig(r=4)))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    weights = {n: w.detach().clone() for n, w in lora.merged_weights(model)}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    plain = models.load_causal_lm(str(folder))
    assert set(weights) == {n for n, _ in plain.named_parameters()}
    merged = lora.publishable(model, LoraConfig(r=4), str(folder))[0]
    for name, value in merged.named_parameters():
        torch.testing.assert_close(weights[name], value, atol=1e-6, rtol=0)
    trained_q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(weights[trained_q], plain.get_parameter(trained_q))

    plain_weights = dict(lora.merged_weights(plain))  # not LoRA: its parameters themselves
    assert all(plain_weights[n] is p for n, p in plain.named_parameters())
