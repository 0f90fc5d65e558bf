"""Turn normalised rows (message lists and answer strings) into token ids and loss masks.

One implementation serves every stage, so the prompt a policy is trained on in SFT is exactly
the prompt it sees in PPO, DPO, GRPO and evaluation. With ``chat=True`` and a tokenizer that has
a chat template, turns are rendered by the template; otherwise message contents are joined with
blank lines (plain continuation, for base models without a template).

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


def encode_answer(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, answer: str, chat: bool = True
) -> list[int]:
    """Token ids of ``answer`` as it follows the prompt, ending with exactly one EOS."""
    ids = _ids(tokenizer, _answer_text(tokenizer, messages, answer, chat))
    eos = tokenizer.eos_token_id
    # Templates may close the turn with EOS plus trailing text; scoring stops at EOS.
    if eos in ids:
        ids = ids[: ids.index(eos) + 1]
    else:
        ids.append(eos)
    return ids


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, chat: bool = True
) -> list[int]:
    return _ids(tokenizer, render_prompt(tokenizer, messages, chat))


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
    data trains every reply, the same way single-turn data trains its one reply."""
    ids: list[int] = []
    mask: list[int] = []
    done = 0  # characters of the rendered conversation already encoded
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt_text = render_prompt(tokenizer, messages[:i], chat)
        if not prompt_text.startswith(rendered):
            raise ValueError("the chat template renders earlier turns differently in later turns")
        context = _ids(tokenizer, prompt_text[done:])
        answer = encode_answer(tokenizer, messages[:i], message["content"], chat)
        ids += context + answer
        mask += [0] * len(context) + [1] * len(answer)
        rendered = prompt_text + _answer_text(tokenizer, messages[:i], message["content"], chat)
        done = len(rendered)
    return Encoded(ids[:max_length], mask[:max_length])
