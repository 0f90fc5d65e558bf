"""Reward-model stage: learns the preference order, publishes a folder the scorer loads."""

import json

import pytest
import torch

from rlhf.config import RewardConfig, SFTConfig
from rlhf.data.demo_task import gold_reward
from rlhf.reward_scoring import RewardScorer
from rlhf.stages import reward, sft


@pytest.fixture(scope="module")
def sft_model(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "model"
    cfg = SFTConfig(base_model="preset:tiny-llama", epochs=10, batch_size=16, eval_every=0)
    sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.SFTOutputs(str(out)))
    return str(out)


def test_reward_model_learns_the_gold_order(prepared, sft_model, tmp_path):
    out = tmp_path / "rm"
    cfg = RewardConfig(
        epochs=3, batch_size=16, eval_every=0, gold_reward="rlhf.data.demo_task:gold_reward"
    )
    metrics = reward.run(
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.RewardOutputs(str(out))
    )
    # 360 noisy training pairs are little; the demo's 2700 reach >= 70% (docs/results.md).
    assert metrics["gold_accuracy"] > 0.6
    assert 0.6 < metrics["label_gold_agreement"] < 0.9  # the labels are noisy, as configured
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact"] == "reward_model"

    scorer = RewardScorer.load(str(out))
    prompt = "Create a shopping list from this recipe: Chop the onion and the garlic. Fry the beef."
    answers = ["onion, garlic, beef", "onion, garlic, garlic, beef, pan. Enjoy your meal!"]
    assert gold_reward(prompt, answers[0]) > gold_reward(prompt, answers[1])
    scores = scorer.score([prompt, [{"role": "user", "content": prompt}]], answers)
    assert scores.shape == (2,)
    assert scores[0] > scores[1]


def test_scorer_rejects_mismatched_lengths(prepared, sft_model, tmp_path):
    out = tmp_path / "rm"
    cfg = RewardConfig(max_steps=2, batch_size=8, eval_every=0)
    reward.run(
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.RewardOutputs(str(out))
    )
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        RewardScorer.load(str(out)).score(["a", "b"], ["x"])


def test_pooling_is_saved_and_used_by_the_scorer(prepared, sft_model, tmp_path):
    out = tmp_path / "rm_mean"
    cfg = RewardConfig(max_steps=2, batch_size=8, eval_every=0, pooling="mean")
    reward.run(
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.RewardOutputs(str(out))
    )
    assert json.loads((out / "rlhf_reward.json").read_text())["pooling"] == "mean"
    scorer = RewardScorer.load(str(out))
    assert scorer.pooling == "mean"
    prompt = "Create a shopping list from this recipe: Chop the onion. Fry the beef."
    short, long = scorer.score([prompt, prompt], ["onion", "onion, beef, onion, beef"])
    assert torch.isfinite(short) and torch.isfinite(long)


def test_unknown_pooling_stops_before_training(prepared, sft_model, tmp_path):
    with pytest.raises(ValueError, match="pooling must be one of"):
        reward.run(
            RewardConfig(pooling="max"),
            reward.RewardInputs(prepared["preferences"], sft_model),
            reward.RewardOutputs(str(tmp_path / "rm")),
        )
