"""Prompt/answer encoding: what is masked, what the model sees, truncation."""

import pytest
from tiny_models import STYLES, styled_tokenizer

from rlhf.modeling.encoding import (
    encode_answer,
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


# Two assistant turns after a system message: both replies must be trained, nothing else.
MULTI_TURN = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "chop the onion"},
    {"role": "assistant", "content": "onion"},
    {"role": "user", "content": "and garlic"},
    {"role": "assistant", "content": "onion, garlic"},
]


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
    msgs = MULTI_TURN
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


# Real-world chat templates (tests/tiny_models.py): ChatML closes a turn with EOS and a newline;
# Llama 3 renders its own BOS, which its tokenizer would also add to plain text.
@pytest.fixture(scope="module", params=["chatml", "llama3"])
def styled(request):
    return request.param, styled_tokenizer(STYLES[request.param], CORPUS * 20, vocab_size=300)


PROMPT_TEXT = {
    "chatml": f"<|im_start|>user\n{CORPUS[0]}<|im_end|>\n<|im_start|>assistant\n",
    "llama3": (
        f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{CORPUS[0]}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}
END = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


def _text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def test_real_templates_put_the_answer_right_after_the_generation_prompt(styled):
    style, tok = styled
    msgs = [{"role": "user", "content": CORPUS[0]}]
    assert render_prompt(tok, msgs) == PROMPT_TEXT[style]
    prompt = encode_prompt(tok, msgs)
    assert _text(tok, prompt) == PROMPT_TEXT[style]  # one BOS for Llama 3, from the template
    enc = encode_prompt_answer(tok, msgs, "onion, garlic", max_length=200)
    answer = encode_answer(tok, msgs, "onion, garlic")
    assert enc.input_ids == prompt + answer
    assert enc.loss_mask == [0] * len(prompt) + [1] * len(answer)
    # The answer and its end-of-turn token, nothing after (ChatML's newline is not trained).
    assert _text(tok, answer) == "onion, garlic" + END[style]
    assert answer.count(tok.eos_token_id) == 1 and answer[-1] == tok.eos_token_id


def test_real_templates_train_every_assistant_turn_of_a_conversation(styled):
    style, tok = styled
    msgs = MULTI_TURN
    enc = encode_conversation(tok, msgs, max_length=500)
    trained = [i for i, m in enumerate(enc.loss_mask) if m]
    assert _text(tok, [enc.input_ids[i] for i in trained]) == (
        f"onion{END[style]}onion, garlic{END[style]}"
    )
    # The whole conversation is what the template renders, newline after <|im_end|> included.
    assert _text(tok, enc.input_ids) == tok.apply_chat_template(msgs, tokenize=False)
    # Before the second reply the model sees exactly the prompt it is sampled from in RL.
    second = trained[len(encode_answer(tok, msgs[:2], "onion")) :][0]
    assert enc.input_ids[:second] == encode_prompt(tok, msgs[:4])
    assert enc.input_ids[second:][: len(encode_answer(tok, msgs[:4], "onion, garlic"))] == (
        encode_answer(tok, msgs[:4], "onion, garlic")
    )


def test_plain_text_starts_with_the_bos_the_tokenizer_adds():
    """Without a template, a tokenizer that prepends BOS to text (Llama, Mistral) gets it once at
    the start of a prompt and of a conversation; one that does not (GPT-2) gets nothing."""
    msgs = [
        {"role": "user", "content": "chop the onion"},
        {"role": "assistant", "content": "onion"},
    ]
    mistral = styled_tokenizer(STYLES["mistral"], CORPUS * 20, vocab_size=300)
    bos = mistral.bos_token_id
    assert encode_prompt(mistral, msgs[:1]) == [
        bos,
        *mistral("chop the onion\n\n")["input_ids"][1:],
    ]
    conversation = encode_conversation(mistral, msgs, 100)
    assert conversation.input_ids[:1] == [bos] and conversation.input_ids.count(bos) == 1
    assert encode_prompt_answer(mistral, msgs[:1], "onion", 100).input_ids == conversation.input_ids
    gpt2 = styled_tokenizer(STYLES["gpt2"], CORPUS * 20, vocab_size=300)
    assert encode_prompt(gpt2, msgs[:1]) == gpt2("chop the onion\n\n")["input_ids"]
    # Under a template that renders BOS itself, the tokenizer's own BOS is not added again.
    llama3 = styled_tokenizer(STYLES["llama3"], CORPUS * 20, vocab_size=300)
    assert encode_prompt(llama3, msgs[:1]).count(llama3.bos_token_id) == 1
