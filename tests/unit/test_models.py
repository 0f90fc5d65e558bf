"""Presets, saving in HF format with safetensors only, tokenizer round trip."""

import pytest

from rlhf.modeling import models
from rlhf.modeling.tokenizer import train_bpe_tokenizer


def test_preset_builds_saves_and_loads(tmp_path):
    tok = train_bpe_tokenizer(["onion, garlic, beef"] * 10, vocab_size=280)
    model = models.build_from_preset("preset:micro-llama", tok, max_length=64)
    assert model.config.vocab_size == len(tok)
    models.save_pretrained(model, tok, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    again = models.load_causal_lm(str(tmp_path))
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    tok2 = models.load_tokenizer(str(tmp_path))
    assert tok2("onion")["input_ids"] == tok("onion")["input_ids"]
    assert tok2.chat_template == tok.chat_template


def test_reward_model_head_on_causal_lm(tmp_path):
    tok = train_bpe_tokenizer(["onion, garlic"] * 10, vocab_size=270)
    models.save_pretrained(models.build_from_preset("preset:micro-llama", tok, 64), tok, tmp_path)
    rm = models.load_reward_model(str(tmp_path))
    assert rm.config.num_labels == 1


def test_unknown_preset_names_the_known_ones():
    tok = train_bpe_tokenizer(["a b"], vocab_size=260)
    with pytest.raises(ValueError, match="tiny-llama"):
        models.build_from_preset("preset:nope", tok)


def test_a_tokenizer_without_pad_pads_with_eos_and_one_without_eos_is_refused(tmp_path):
    from tiny_models import STYLES, styled_tokenizer

    gpt2 = styled_tokenizer(STYLES["gpt2"], ["onion, garlic"] * 10, vocab_size=270)
    gpt2.save_pretrained(tmp_path / "gpt2")
    loaded = models.load_tokenizer(str(tmp_path / "gpt2"))
    assert loaded.pad_token_id == loaded.eos_token_id and len(loaded) == len(gpt2)
    gpt2.eos_token = None
    gpt2.save_pretrained(tmp_path / "no_eos")
    with pytest.raises(ValueError, match=r"no_eos: the tokenizer has no EOS token"):
        models.load_tokenizer(str(tmp_path / "no_eos"))


def test_a_model_holding_shards_takes_its_whole_weights_and_saves_them(tmp_path):
    """What publishing a ZeRO-3 model does on rank 0: its parameters hold empty placeholders
    until the gathered weights are put in, tied weights included."""
    import torch
    from safetensors.torch import load_file

    tok = train_bpe_tokenizer(["onion, garlic"] * 10, vocab_size=270)
    model = models.build_from_preset("preset:micro-llama", tok, 64)
    whole = {k: v.clone() for k, v in model.state_dict().items()}
    for param in model.parameters():
        param.data = torch.empty(0)  # as DeepSpeed leaves a partitioned parameter
    models.take_weights(model, whole)
    models.save_pretrained(model, tok, tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, whole[name], rtol=0, atol=0)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
