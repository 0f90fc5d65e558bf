"""A causal LM as a pairwise judge, each pair judged in both orders to cancel position bias.

For two candidates x and y of a task, the judging prompt (``JudgeConfig.template``: the
conversation, then "Answer A" and "Answer B") is built twice: x as A and y as B, then y as A
and x as B. Each time the LM's log-probabilities of the two replies (``labels``, "A" and "B")
right after the prompt say which answer it prefers in that order. A pair is written only when
both orders prefer the same candidate; when they disagree (a judge that prefers whatever comes
first) or the two replies are equally likely, the pair is a tie and gives no pair.

The log-probabilities come from a :data:`LabelLogprobs` function, so the tie logic is the same
whatever scores the replies: :func:`lm_label_logprobs` for a model folder, anything else in
tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import torch

from rlhf.config import JudgeConfig
from rlhf.labelling.batch import Candidate, Message, Task
from rlhf.labelling.export import Pair

# Judging prompts (user messages) -> per prompt, (log p(first label), log p(second label)).
LabelLogprobs = Callable[[Sequence[str]], Sequence[tuple[float, float]]]
_KEYS = re.compile(r"\{(prompt|first|second)\}")


def conversation_text(prompt: Sequence[Message]) -> str:
    """How the template's ``{prompt}`` shows a conversation: one ``role: text`` line per turn."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def judging_prompt(template: str, prompt: Sequence[Message], first: str, second: str) -> str:
    """``template`` with {prompt}, {first} and {second} filled in one pass (so braces inside
    an answer are left as they are)."""
    values = {"prompt": conversation_text(prompt), "first": first, "second": second}
    return _KEYS.sub(lambda m: values[m.group(1)], template)


def order_verdict(logprobs: tuple[float, float]) -> int:
    """+1: the first answer shown is preferred, -1: the second, 0: neither (equal)."""
    first, second = logprobs
    return (first > second) - (first < second)


def both_orders(x_first: tuple[float, float], y_first: tuple[float, float]) -> int:
    """+1: x is better in both orders, -1: y is, 0: a tie (the orders disagree, or a reply
    was equally likely). ``x_first``: the label log-probs with x shown as A; ``y_first``:
    with y as A."""
    x_vote, y_vote = order_verdict(x_first), order_verdict(y_first)
    if x_vote == 1 and y_vote == -1:
        return 1
    if x_vote == -1 and y_vote == 1:
        return -1
    return 0


@dataclass
class PairwiseJudge:
    name: str
    label_logprobs: LabelLogprobs
    template: str
    labels: Sequence[str] = ("A", "B")
    judged: int = 0  # pairs judged (each in both orders)
    ties: int = 0  # of which the two orders disagreed

    def pairs(self, task: Task) -> list[Pair]:
        couples: list[tuple[Candidate, Candidate]] = list(combinations(task.candidates, 2))
        prompts = [
            judging_prompt(self.template, task.prompt, a.text, b.text)
            for x, y in couples
            for a, b in ((x, y), (y, x))
        ]
        logprobs = list(self.label_logprobs(prompts))
        out = []
        for n, (x, y) in enumerate(couples):
            verdict = both_orders(logprobs[2 * n], logprobs[2 * n + 1])
            self.judged += 1
            if verdict == 0:
                self.ties += 1
                continue
            better, worse = (x, y) if verdict == 1 else (y, x)
            out.append(Pair(task, self.name, better.id, worse.id))
        return out


def lm_label_logprobs(uri: str, config: JudgeConfig) -> LabelLogprobs:
    """The label log-probs of the causal LM at ``uri``: each judging prompt is one user
    message, rendered as the stages render prompts (its chat template, generation prompt
    included, unless ``chat_template`` is off), and each label's tokens are scored after it
    (summed log-probs; no EOS: only the reply's first word is asked for)."""
    from rlhf.modeling import models
    from rlhf.modeling.encoding import Encoded, encode_prompt
    from rlhf.modeling.forward import sequence_logprob_sums
    from rlhf.modeling.padding import collate

    tokenizer = models.load_tokenizer(uri, config.trust_remote_code)
    device = models.pick_device(config.device)
    model = models.load_causal_lm(uri, config.dtype, config.trust_remote_code).to(device).eval()
    label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in config.labels]

    @torch.no_grad()
    def score(prompts: Sequence[str]) -> list[tuple[float, float]]:
        examples = []
        for text in prompts:
            ids = encode_prompt(
                tokenizer, [{"role": "user", "content": text}], config.chat_template
            )
            for label in label_ids:
                kept = ids[max(0, len(ids) - (config.max_length - len(label))) :]
                examples.append(Encoded(kept + label, [0] * len(kept) + [1] * len(label)))
        sums: list[float] = []
        for start in range(0, len(examples), config.batch_size):
            batch = collate(examples[start : start + config.batch_size], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            sums += sequence_logprob_sums(model, **batch).float().cpu().tolist()
        return [(sums[2 * i], sums[2 * i + 1]) for i in range(len(prompts))]

    return score
