"""Judges for AI feedback (RLAIF): what labels a batch's tasks instead of people.

A judge is named on the command line (``rlhf judge --judge ...``):

- ``reward-model:DIR``: a reward model this project trained scores each candidate;
- ``function:module:fn``: ``fn(prompt_messages, candidate_texts) -> scores``, imported as the
  configs' ``gold_reward`` is;
- ``lm:DIR``: a causal LM asked, pair by pair, which answer is better
  (``rlhf.labelling.pairwise_judge``).

A scoring judge (the first two) ranks a task's candidates by score, higher first; equal
scores are tied and give no pair, as equal ranks from a person do. Every judge gives the
task's preference :class:`Pair` s, labelled ``judge:<kind>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rlhf.config import JudgeConfig
from rlhf.gold import load_reward_function
from rlhf.labelling.batch import Message, Task
from rlhf.labelling.export import Pair, ranking_pairs

KINDS = ("reward-model", "function", "lm")
Scores = Callable[[Sequence[Message], Sequence[str]], Sequence[float]]


class Judge(Protocol):
    name: str  # the export's labeller: "judge:reward-model"

    def pairs(self, task: Task) -> list[Pair]: ...


def score_ranks(scores: Mapping[str, float]) -> dict[str, int]:
    """Ranks from scores, higher first: 1 for the best, equal scores sharing a rank (dense:
    scores 0.9, 0.5, 0.5, 0.1 rank 1, 2, 2, 3)."""
    distinct = sorted(set(scores.values()), reverse=True)
    rank = {s: r for r, s in enumerate(distinct, start=1)}
    return {cid: rank[s] for cid, s in scores.items()}


@dataclass
class ScoringJudge:
    """A judge that scores each candidate on its own; its ranking gives the pairs."""

    name: str
    score: Scores

    def scores(self, task: Task) -> dict[str, float]:
        texts = [c.text for c in task.candidates]
        values = [float(s) for s in self.score([dict(m) for m in task.prompt], texts)]
        if len(values) != len(texts):
            raise ValueError(
                f"{self.name}: task {task.task_id}: {len(values)} scores for {len(texts)} "
                "candidates"
            )
        return {c.id: v for c, v in zip(task.candidates, values, strict=True)}

    def pairs(self, task: Task) -> list[Pair]:
        return list(ranking_pairs(task, self.name, score_ranks(self.scores(task))))


def reward_model_scores(uri: str, config: JudgeConfig) -> Scores:
    """A reward model folder's scores of each candidate (``RewardScorer``, as trained)."""
    from rlhf.modeling.reward_scoring import RewardScorer

    scorer = RewardScorer.load(uri, config.device, config.dtype)

    def score(prompt: Sequence[Message], texts: Sequence[str]) -> list[float]:
        scores = scorer.score([list(prompt)] * len(texts), list(texts), config.batch_size)
        return scores.tolist()

    return score


def parse_judge(spec: str) -> tuple[str, str]:
    """``"reward-model:out/rm"`` -> ``("reward-model", "out/rm")``, or a clear error."""
    kind, sep, target = spec.partition(":")
    if not sep or kind not in KINDS or not target:
        raise ValueError(
            f"--judge must be reward-model:DIR, function:module:fn or lm:DIR, got {spec!r}"
        )
    return kind, target


def load_judge(spec: str, config: JudgeConfig) -> Judge:
    """The judge ``spec`` names, loaded and ready."""
    kind, target = parse_judge(spec)
    name = f"judge:{kind}"
    if kind == "reward-model":
        return ScoringJudge(name, reward_model_scores(target, config))
    if kind == "function":
        return ScoringJudge(name, load_reward_function(target))
    from rlhf.labelling.pairwise_judge import PairwiseJudge, lm_label_logprobs

    return PairwiseJudge(
        name, lm_label_logprobs(target, config), config.judging_template, config.labels
    )


def judge_tasks(judge: Judge, tasks: Sequence[Task]) -> Iterator[Pair]:
    for task in tasks:
        yield from judge.pairs(task)
