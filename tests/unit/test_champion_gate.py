"""The champion gate's decision, checked case by case against what the rule says."""

from __future__ import annotations

import pytest

from rlhf.algorithms.ranking import win_rate
from rlhf.stages.champion_gate import decide, judge_for, judged


def test_first_model_becomes_champion_whatever_the_numbers():
    d = decide(None, samples=0, threshold=0.5, min_samples=100, judge="gold")
    assert d.alias == "champion" and d.promoted and "first model" in d.reason
    assert d.metrics() == {
        "gate/promoted": 1.0, "gate/samples": 0.0, "gate/threshold": 0.5, "gate/min_samples": 100.0,
    }  # fmt: skip


def test_winner_takes_the_alias_and_a_tie_keeps_the_incumbent():
    # Candidate scores [3, 1, 2, 2] against the champion's [1, 1, 1, 2]: pairs won, tied, won,
    # tied -> (1 + 0.5 + 1 + 0.5) / 4 = 0.75 > 0.5.
    rate = win_rate([3.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 2.0])
    assert rate == 0.75
    assert decide(rate, samples=4, threshold=0.5, min_samples=4, judge="gold").alias == "champion"
    # Exactly at the threshold (two wins, two losses: 2/4 = 0.5) is not a win.
    d = decide(0.5, samples=4, threshold=0.5, min_samples=4, judge="gold")
    assert d.alias == "challenger" and not d.promoted and "<= 0.5" in d.reason
    # A higher bar: 0.75 does not clear 0.8.
    assert decide(0.75, samples=4, threshold=0.8, min_samples=4, judge="gold").alias == "challenger"


def test_too_few_samples_never_replace_a_champion():
    d = decide(1.0, samples=99, threshold=0.5, min_samples=100, judge="reward_model")
    assert d.alias == "challenger" and "only 99 paired samples" in d.reason
    assert d.metrics()["gate/win_rate"] == 1.0
    assert decide(1.0, samples=100, threshold=0.5, min_samples=100, judge="gold").promoted


def test_judge_choice():
    assert judge_for("auto", has_gold=True) == "gold"
    assert judge_for("auto", has_gold=False) == "reward_model"
    assert judge_for("reward_model", has_gold=True) == "reward_model"
    with pytest.raises(ValueError, match="no gold_reward"):
        judge_for("gold", has_gold=False)
    with pytest.raises(ValueError, match="gate_judge must be one of"):
        judge_for("human", has_gold=True)
    with pytest.raises(ValueError, match="needs a judge"):
        judge_for("auto", has_gold=False, has_reward_model=False)
    assert judge_for("auto", has_gold=True, has_reward_model=False) == "gold"
    assert judged([1.0], [2.0], "gold") == [2.0]
    assert judged([1.0], [2.0], "reward_model") == [1.0]
