"""Prompt/answer encoding: what is masked, what the model sees, truncation."""

import pytest

from rlhf.modeling.encoding import (
    encode_conversation,
    encode_prompt,
    encode_prompt_answer,
    render_prompt,
)
from rlhf.modeling.tokenizer import train_bpe_tokenizer

CORPUS = ["Create a shopping list from this recipe: chop the onion and garlic.", "onion, garlic"]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(CORPUS * 20, vocab_size=300)


def _masked_text(tok, enc, keep):
    return tok.decode([t for t, m in zip(enc.input_ids, enc.loss_mask, strict=True) if m == keep])


def test_prompt_answer_masks_the_prompt(tok):
    msgs = [{"role": "user", "content": CORPUS[0]}]
    enc = encode_prompt_answer(tok, msgs, "onion, garlic", max_length=200)
    prompt = encode_prompt(tok, msgs)
    assert enc.input_ids[: len(prompt)] == prompt
    assert enc.loss_mask == [0] * len(prompt) + [1] * (len(enc) - len(prompt))
    assert _masked_text(tok, enc, 1) == "onion, garlic<|eos|>"
    assert render_prompt(tok, msgs) == f"<|user|>\n{CORPUS[0]}\n<|assistant|>\n"


def test_plain_text_mode_without_template(tok):
    msgs = [{"role": "user", "content": "chop the onion"}]
    assert render_prompt(tok, msgs, chat=False) == "chop the onion\n\n"
    enc = encode_prompt_answer(tok, msgs, "onion", max_length=200, chat=False)
    assert _masked_text(tok, enc, 1) == "onion<|eos|>"


def test_multi_turn_trains_every_assistant_turn(tok):
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "chop the onion"},
        {"role": "assistant", "content": "onion"},
        {"role": "user", "content": "and garlic"},
        {"role": "assistant", "content": "onion, garlic"},
    ]
    enc = encode_conversation(tok, msgs, max_length=500)
    assert _masked_text(tok, enc, 1) == "onion<|eos|>onion, garlic<|eos|>"
    assert tok.decode(enc.input_ids) == tok.apply_chat_template(msgs, tokenize=False)


def test_truncation_cuts_the_prompt_from_the_left(tok):
    msgs = [{"role": "user", "content": CORPUS[0] * 5}]
    answer_len = len(encode_prompt_answer(tok, msgs, "onion", 10_000)) - len(
        encode_prompt(tok, msgs)
    )
    enc = encode_prompt_answer(tok, msgs, "onion", max_length=20)
    assert len(enc) == 20
    assert sum(enc.loss_mask) == answer_len  # the answer is whole
    full = encode_prompt(tok, msgs)
    assert enc.input_ids[: 20 - answer_len] == full[-(20 - answer_len) :]
