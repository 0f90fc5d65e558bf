"""Judging the compared models' samples: the reward model's scores and the gold reward's."""

from __future__ import annotations

from rlhf.gold import GoldReward
from rlhf.modeling.encoding import Messages
from rlhf.modeling.reward_scoring import RewardScorer
from rlhf.stages.evaluation.compared import ModelResult
from rlhf.stages.evaluation.sampling import Samples


def score_samples(
    samples: dict[str, Samples],
    paths: dict[str, str],
    flat_prompts: list[Messages],
    scorer: RewardScorer | None,
    gold: GoldReward | None,
    batch_size: int,
) -> dict[str, ModelResult]:
    """Each model's ``samples`` (responses to ``flat_prompts``, entry by entry) scored by the
    reward model and the gold reward; a judge that is None leaves its scores None."""
    results = {}
    for name, s in samples.items():
        rm = scorer.score(flat_prompts, s.responses, batch_size).tolist() if scorer else None
        golds = (
            [float(gold(p, t)) for p, t in zip(flat_prompts, s.responses, strict=True)]
            if gold
            else None
        )
        results[name] = ModelResult(
            name, paths[name], s.responses, s.lengths, rm, golds, s.perplexity
        )
    return results
