"""Turn normalised rows (message lists and answer strings) into token ids and loss masks.

One implementation serves every stage, so the prompt a policy is trained on in SFT is exactly
the prompt it sees in PPO, DPO, GRPO and evaluation. With ``chat=True`` and a tokenizer that has
a chat template, turns are rendered by the template, which places any BOS itself (as
``apply_chat_template`` assumes); otherwise message contents are joined with blank lines (plain
continuation, for base models without a template) after the special tokens the tokenizer puts
before any text by itself (Llama's and Mistral's BOS; none for GPT-2 or Qwen).

Segments (prompt, each answer) are tokenised separately and concatenated, so an answer's tokens
never merge with the prompt's: what generation appends after the prompt is what training scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]


@dataclass
class Encoded:
    """Token ids of one example and which of them the loss counts (1) or ignores (0)."""

    input_ids: list[int]
    loss_mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def uses_template(tokenizer: PreTrainedTokenizerBase, chat: bool) -> bool:
    return chat and bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages, chat: bool = True) -> str:
    """The text a model continues to answer ``messages`` (generation prompt included)."""
    if uses_template(tokenizer, chat):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def leading_special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids ``tokenizer(text)`` puts before the text's own tokens (a BOS, or nothing)."""
    plain = _ids(tokenizer, "a")
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def _start_ids(tokenizer: PreTrainedTokenizerBase, chat: bool) -> list[int]:
    """What a sequence begins with before its rendered text: nothing under a chat template
    (it renders its own BOS), else the tokenizer's own leading special tokens."""
    return [] if uses_template(tokenizer, chat) else leading_special_ids(tokenizer)


def _answer_text(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, answer: str, chat: bool
) -> str:
    """The text that follows ``render_prompt(messages)`` when the assistant says ``answer``."""
    if not uses_template(tokenizer, chat):
        return answer
    prefix = render_prompt(tokenizer, messages, chat)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(prefix):
        raise ValueError(
            "the tokenizer's chat template does not render a conversation as an extension of "
            "its generation prompt; set chat_template: false to use plain text"
        )
    return full[len(prefix) :]


def _split_at_eos(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """An answer's rendered text as (its tokens through exactly one EOS, the tokens the
    template puts after that EOS, such as ChatML's newline after ``<|im_end|>``)."""
    ids = _ids(tokenizer, text)
    eos = tokenizer.eos_token_id
    if eos in ids:
        cut = ids.index(eos) + 1
        return ids[:cut], ids[cut:]
    return [*ids, eos], []  # a template that closes turns without EOS: generation stops there


def encode_answer(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, answer: str, chat: bool = True
) -> list[int]:
    """Token ids of ``answer`` as it follows the prompt, ending with exactly one EOS."""
    # Templates may close the turn with EOS plus trailing text; scoring stops at EOS.
    return _split_at_eos(tokenizer, _answer_text(tokenizer, messages, answer, chat))[0]


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, chat: bool = True
) -> list[int]:
    return _start_ids(tokenizer, chat) + _ids(tokenizer, render_prompt(tokenizer, messages, chat))


def encode_prompt_answer(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    answer: str,
    max_length: int,
    chat: bool = True,
) -> Encoded:
    """Prompt + answer, the loss on answer tokens only. Over ``max_length`` the prompt is cut
    from the left (its end is what the answer depends on most), then the answer from the right."""
    prompt = encode_prompt(tokenizer, messages, chat)
    answer_ids = encode_answer(tokenizer, messages, answer, chat)
    answer_ids = answer_ids[:max_length]
    prompt = prompt[max(0, len(prompt) - (max_length - len(answer_ids))) :]
    return Encoded(prompt + answer_ids, [0] * len(prompt) + [1] * len(answer_ids))


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, max_length: int, chat: bool = True
) -> Encoded:
    """A whole conversation for SFT: every assistant turn counts in the loss, nothing else.

    Each assistant turn is encoded as an answer to the conversation before it, so multi-turn
    data trains every reply, the same way single-turn data trains its one reply. What a
    template renders after a reply's EOS (ChatML's newline) stays in, unmasked: the next turn
    is seen as a prompt rendering it would show it."""
    ids: list[int] = _start_ids(tokenizer, chat)
    mask: list[int] = [0] * len(ids)
    done = 0  # characters of the rendered conversation already encoded
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt_text = render_prompt(tokenizer, messages[:i], chat)
        if not prompt_text.startswith(rendered):
            raise ValueError("the chat template renders earlier turns differently in later turns")
        context = _ids(tokenizer, prompt_text[done:])
        answer_text = _answer_text(tokenizer, messages[:i], message["content"], chat)
        answer, after = _split_at_eos(tokenizer, answer_text)
        ids += context + answer + after
        mask += [0] * len(context) + [1] * len(answer) + [0] * len(after)
        rendered = prompt_text + answer_text
        done = len(rendered)
    return Encoded(ids[:max_length], mask[:max_length])
