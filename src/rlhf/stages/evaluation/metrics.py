"""The evaluation's metrics: pure functions over the compared models' scores and log-probs.

docs/evaluation.md says how to read each one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rlhf.algorithms.kl import kl_penalty, sequence_kl
from rlhf.algorithms.ranking import ELO_BASE, ELO_K, elo_ratings, round_robin_matches, win_rate
from rlhf.modeling.generation import Rollout
from rlhf.stages.evaluation.compared import CANDIDATE, REFERENCE, ModelResult


def _mean(values: Sequence[float]) -> float:
    """The arithmetic mean, summed exactly (``math.fsum``) so the order of the values does not
    change the last digit; ``values`` must not be empty."""
    return math.fsum(values) / len(values)


def sample_kl(
    rollouts: list[Rollout], logprobs: list[torch.Tensor], ref_logprobs: list[torch.Tensor]
) -> float:
    """Mean over responses of sum over response tokens of log pi - log ref (the "k1"
    estimator): an unbiased estimate of KL(pi || ref) when the responses were sampled from pi.

    Args:
        rollouts: batches of pi's responses; each one's ``response_mask`` (B, R) selects the
            response tokens (padding after EOS is not counted).
        logprobs, ref_logprobs: per batch, (B, R) log-probs of those tokens under pi and ref.
    """
    per_response = [
        sequence_kl(kl_penalty(lp, ref, "k1"), r.response_mask.float())
        for r, lp, ref in zip(rollouts, logprobs, ref_logprobs, strict=True)
    ]
    return torch.cat(per_response).double().mean().item()


def compute_metrics(
    results: dict[str, ModelResult], n_prompts: int, samples_per_prompt: int, kl: float | None
) -> dict[str, float]:
    """The flat metrics from every model's scores (``results`` holds candidate and reference
    first, then the others, in the order Elo plays them):

    - ``n_prompts``, ``n_samples`` (prompts x samples per prompt);
    - per model ``<name>/reward_mean``, ``<name>/gold_mean``, ``<name>/length_mean`` (mean
      response tokens) and ``<name>/perplexity``, each when the model has those values;
    - ``win_rate_rm`` and ``win_rate_gold``: the share of paired samples (same prompt, same
      sample index) where the candidate scores higher than the reference, ties 1/2;
    - ``kl_candidate_reference``: ``kl`` when it is not None;
    - ``elo/<name>`` for every model when three or more are compared, each judged by its gold
      scores when it has them, else its RM scores (see ``rlhf.algorithms.ranking``).

    Without a reward model the RM-judged metrics are left out; without RM and gold scores there
    are no win rates or Elo ratings."""
    cand, ref = results[CANDIDATE], results[REFERENCE]
    has_gold = cand.gold_scores is not None
    metrics: dict[str, float] = {
        "n_prompts": float(n_prompts),
        "n_samples": float(n_prompts * samples_per_prompt),
    }
    for name, res in results.items():
        if res.rm_scores is not None:
            metrics[f"{name}/reward_mean"] = _mean(res.rm_scores)
        if res.gold_scores is not None:
            metrics[f"{name}/gold_mean"] = _mean(res.gold_scores)
        metrics[f"{name}/length_mean"] = _mean(res.lengths)
        if res.perplexity is not None:
            metrics[f"{name}/perplexity"] = res.perplexity
    if cand.rm_scores is not None and ref.rm_scores is not None:
        metrics["win_rate_rm"] = win_rate(cand.rm_scores, ref.rm_scores)
    if has_gold:
        assert cand.gold_scores is not None and ref.gold_scores is not None
        metrics["win_rate_gold"] = win_rate(cand.gold_scores, ref.gold_scores)
    if kl is not None:
        metrics["kl_candidate_reference"] = kl
    judged = {
        name: res.gold_scores if res.gold_scores is not None else res.rm_scores
        for name, res in results.items()
    }
    if len(results) >= 3 and all(v is not None for v in judged.values()):
        for name, rating in elo_ratings(round_robin_matches(judged), ELO_K, ELO_BASE).items():
            metrics[f"elo/{name}"] = rating
    return metrics
