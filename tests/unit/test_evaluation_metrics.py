"""The evaluation's metrics on hand-worked scores: means, paired win rates, Elo ratings and the
sample-based KL."""

import pytest
import torch

from rlhf.modeling.generation import Rollout
from rlhf.stages.evaluation.compared import ModelResult
from rlhf.stages.evaluation.metrics import compute_metrics, sample_kl


def _result(name, lengths, rm=None, gold=None, perplexity=None):
    return ModelResult(name, f"/models/{name}", ["x"] * len(lengths), lengths, rm, gold, perplexity)


def test_means_win_rates_and_kl_of_two_models():
    results = {
        "candidate": _result("candidate", [3, 5, 4, 8], [2.0, 1.0, 0.0, 5.0], [1, 0, 0, 1], 2.5),
        "reference": _result("reference", [2, 2, 2, 2], [1.0, 1.0, 3.0, -1.0], [0, 0, 1, 1]),
    }
    assert compute_metrics(results, n_prompts=2, samples_per_prompt=2, kl=0.25) == {
        "n_prompts": 2.0,
        "n_samples": 4.0,
        "candidate/reward_mean": 2.0,  # (2 + 1 + 0 + 5) / 4
        "candidate/gold_mean": 0.5,
        "candidate/length_mean": 5.0,  # (3 + 5 + 4 + 8) / 4
        "candidate/perplexity": 2.5,
        "reference/reward_mean": 1.0,  # (1 + 1 + 3 - 1) / 4
        "reference/gold_mean": 0.5,
        "reference/length_mean": 2.0,  # no perplexity: none measured
        "win_rate_rm": 0.625,  # win, tie, loss, win: (1 + 0.5 + 0 + 1) / 4
        "win_rate_gold": 0.5,  # win, tie, loss, tie: (1 + 0.5 + 0 + 0.5) / 4
        "kl_candidate_reference": 0.25,
    }  # two models: no Elo


def test_elo_of_three_models_judged_by_gold_over_rm():
    """One sample each, gold 1 / 0 / 0 (the RM scores, ranking them the other way, are not
    used). Round robin: candidate beats reference (E = 0.5, +8: 1008 / 992), candidate beats
    other (E = 1 / (1 + 10^(-8/400)) = 0.51151, +16 * 0.48849 = +7.8158), reference ties
    other (992 vs 992.1842: E = 0.49974, +0.0042 to reference)."""
    results = {
        "candidate": _result("candidate", [4], rm=[0.0], gold=[1.0]),
        "reference": _result("reference", [4], rm=[1.0], gold=[0.0]),
        "other": _result("other", [4], rm=[2.0], gold=[0.0]),
    }
    metrics = compute_metrics(results, n_prompts=1, samples_per_prompt=1, kl=None)
    assert metrics["elo/candidate"] == pytest.approx(1015.8158, abs=1e-4)
    assert metrics["elo/reference"] == pytest.approx(992.0042, abs=1e-4)
    assert metrics["elo/other"] == pytest.approx(992.1799, abs=1e-4)
    assert metrics["win_rate_gold"] == 1.0 and metrics["win_rate_rm"] == 0.0
    assert "kl_candidate_reference" not in metrics


def test_without_a_reward_model_elo_and_win_rate_come_from_gold_alone():
    """The DPO pipeline: no RM scores. Equal gold scores everywhere: every match a tie between
    equal ratings, so every rating stays at 1000."""
    results = {
        name: _result(name, [1, 3], gold=[0.5, -1.0]) for name in ("candidate", "reference", "b")
    }
    metrics = compute_metrics(results, n_prompts=1, samples_per_prompt=2, kl=None)
    assert not any("reward_mean" in k or k == "win_rate_rm" for k in metrics)
    assert metrics["win_rate_gold"] == 0.5
    assert metrics["candidate/length_mean"] == 2.0
    assert {k: v for k, v in metrics.items() if k.startswith("elo/")} == {
        "elo/candidate": 1000.0,
        "elo/reference": 1000.0,
        "elo/b": 1000.0,
    }


def test_without_any_judge_there_are_no_win_rates_or_elo():
    results = {name: _result(name, [2, 4]) for name in ("candidate", "reference", "b")}
    metrics = compute_metrics(results, n_prompts=2, samples_per_prompt=1, kl=0.1)
    assert metrics == {
        "n_prompts": 2.0,
        "n_samples": 2.0,
        "candidate/length_mean": 3.0,
        "reference/length_mean": 3.0,
        "b/length_mean": 3.0,
        "kl_candidate_reference": 0.1,
    }


def _rollout(response_mask):
    mask = torch.tensor(response_mask)
    batch, width = mask.shape
    ids = torch.zeros(batch, 1 + width, dtype=torch.long)  # one prompt token; ids unused
    return Rollout(ids, torch.ones_like(ids), 1, mask, mask[:, -1] == 0)


def test_sample_kl_is_the_mean_over_responses_of_summed_k1():
    """k1 = log pi - log ref on the response tokens only. Batch 1: (0.5 + 0 - 1) = -0.5 and
    (0.5 + 0.5, the padded -9 not counted) = 1.0; batch 2: 0.2 (second token padding).
    Mean over the three responses: (-0.5 + 1.0 + 0.2) / 3."""
    rollouts = [_rollout([[1, 1, 1], [1, 1, 0]]), _rollout([[1, 0]])]
    logprobs = [
        torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]]),
        torch.tensor([[-0.2, -0.1]]),
    ]
    ref = [torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -1.0, 0.0]]), torch.tensor([[-0.4, -0.6]])]
    assert sample_kl(rollouts, logprobs, ref) == pytest.approx(0.7 / 3, abs=1e-6)
    assert sample_kl(rollouts, logprobs, logprobs) == 0.0  # the policy against itself
