"""What scores the K answers online DPO samples for each prompt: one interface, chosen by one
setting. By default the reward model (or ``reward_function``) through
:class:`~rlhf.stages.on_policy.ResponseRewards`, as PPO and GRPO score; with ``judge`` set, a
judge named ``module:function`` that sees a prompt's K answers together and returns one score
each (an AI-feedback judge: a pairwise one returns each answer's wins, ties when it cannot
tell). Only the order of the scores given to one prompt's answers matters."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from rlhf.config import OnlineDPOConfig
from rlhf.gold import load_reward_function
from rlhf.modeling.encoding import Messages
from rlhf.stages.on_policy import ResponseRewards

# judge(prompt messages, the K answers to it) -> K scores, higher better, equal ones a tie.
Judge = Callable[[Messages, list[str]], Sequence[float]]


class AnswerScorer(Protocol):
    def score(self, prompts: list[Messages], texts: list[str], ended: torch.Tensor) -> torch.Tensor:
        """(N,) scores of ``texts[i]`` answering ``prompts[i]``, group-major (K answers to one
        prompt in a row), on ``ended``'s device; ``ended[i]``: whether answer i emitted EOS."""
        ...


class JudgeScorer:
    """A ``module:function`` judge, called once per prompt with its K answers. The judge sees
    the texts as they were sampled (a cut-off answer included) and nothing is added to its
    scores."""

    def __init__(self, path: str, answers_per_prompt: int) -> None:
        self.path = path
        self.judge: Judge = load_reward_function(path)
        self.k = answers_per_prompt

    def score(self, prompts: list[Messages], texts: list[str], ended: torch.Tensor) -> torch.Tensor:
        scores: list[float] = []
        for start in range(0, len(texts), self.k):
            answers = texts[start : start + self.k]
            given = list(self.judge(prompts[start], answers))
            if len(given) != len(answers) or not all(
                isinstance(s, (int, float)) and math.isfinite(s) for s in given
            ):
                raise ValueError(
                    f"judge {self.path}: expected {len(answers)} finite scores for the answers "
                    f"to prompt {prompts[start][-1]['content'][:80]!r}, got {given!r}"
                )
            scores.extend(float(s) for s in given)
        return torch.tensor(scores, dtype=torch.float32, device=ended.device)


def answer_scorer(
    reward_model: str | None, config: OnlineDPOConfig, device: torch.device
) -> AnswerScorer:
    """The judge when ``config.judge`` is set; else the reward model (or ``reward_function``),
    with ``missing_eos_penalty`` added to cut-off answers."""
    if config.judge:
        return JudgeScorer(config.judge, config.samples_per_prompt)
    return ResponseRewards(reward_model, config, device)
