"""Reward-model stage: learns the preference order, publishes a folder the scorer loads."""

import json
from pathlib import Path

import pytest
import torch
from killed_run import assert_resumes_with_cached_reference, assert_same_weights

from rlhf.config import RewardConfig, SFTConfig, to_dict
from rlhf.data.demo_task import gold_reward
from rlhf.modeling import models
from rlhf.modeling.encoding import encode_prompt_answer
from rlhf.modeling.forward import sequence_logprob_sums
from rlhf.modeling.reward_scoring import RewardScorer, as_messages
from rlhf.stages import reward, sft


@pytest.fixture(scope="module")
def sft_model(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "model"
    cfg = SFTConfig(base_model="preset:tiny-llama", epochs=10, batch_size=16, eval_every=0)
    sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(out)))
    return str(out)


@pytest.mark.parametrize(
    "head_settings",
    [{"head": "log_ratio", "lr": 3e-4}, {"head": "scalar", "lr": 5e-4}],
    ids=["log_ratio", "scalar"],
)
def test_reward_model_learns_the_gold_order(prepared, sft_model, tmp_path, head_settings):
    out = tmp_path / "rm"
    cfg = RewardConfig(
        epochs=3,
        batch_size=16,
        eval_every=0,
        gold_reward="rlhf.data.demo_task:gold_reward",
        **head_settings,
    )
    metrics = reward.run(
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.ModelOutputs(str(out))
    )
    # 360 noisy training pairs are little; the demo's 2700 reach >= 70% (docs/results.md).
    assert metrics["gold_accuracy"] > 0.6
    assert 0.6 < metrics["label_gold_agreement"] < 0.9  # the labels are noisy, as configured
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact"] == "reward_model"
    assert manifest["head"] == head_settings["head"]

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
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.ModelOutputs(str(out))
    )
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        RewardScorer.load(str(out)).score(["a", "b"], ["x"])


def test_pooling_is_saved_and_used_by_the_scorer(prepared, sft_model, tmp_path):
    out = tmp_path / "rm_mean"
    cfg = RewardConfig(max_steps=2, batch_size=8, eval_every=0, head="scalar", pooling="mean")
    reward.run(
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.ModelOutputs(str(out))
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
            reward.ModelOutputs(str(tmp_path / "rm")),
        )


def test_log_ratio_head_scores_against_the_saved_reference(prepared, sft_model, tmp_path):
    """The folder holds the frozen starting model; the scorer's reward is beta times the
    answer's log-prob under the trained model minus under that reference, EOS included."""
    out = tmp_path / "rm_ratio"
    cfg = RewardConfig(max_steps=3, batch_size=8, eval_every=0, lr=1e-3, beta=0.5)
    reward.run(
        cfg, reward.RewardInputs(prepared["preferences"], sft_model), reward.ModelOutputs(str(out))
    )
    settings = json.loads((out / "rlhf_reward.json").read_text())
    assert settings["head"] == "log_ratio" and settings["beta"] == 0.5
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(f["path"].startswith("reference/") for f in manifest["files"])
    assert_same_weights(out / "reference", Path(sft_model))

    scorer = RewardScorer.load(str(out))
    prompt = "Create a shopping list from this recipe: Chop the onion. Fry the beef."
    answer = "onion, beef"
    tokenizer = models.load_tokenizer(str(out))
    enc = encode_prompt_answer(tokenizer, as_messages(prompt), answer, 256, True)
    assert enc.input_ids[-1] == tokenizer.eos_token_id  # stopping is part of the answer
    ids = torch.tensor([enc.input_ids])
    mask = torch.tensor([enc.loss_mask])

    def logprob(folder):
        lm = models.load_causal_lm(str(folder)).eval()
        with torch.no_grad():
            return sequence_logprob_sums(lm, ids, torch.ones_like(ids), mask).item()

    expected = 0.5 * (logprob(out) - logprob(sft_model))
    assert expected != 0.0  # three steps moved the model
    assert scorer.score([prompt], [answer]).item() == pytest.approx(expected, abs=1e-5)

    (out / "rlhf_reward.json").write_text(json.dumps({**settings, "head": "linear"}))
    with pytest.raises(ValueError, match=r"rlhf_reward.json: head must be one of"):
        RewardScorer.load(str(out))


def test_unknown_head_stops_before_training(prepared, sft_model, tmp_path):
    with pytest.raises(ValueError, match="head must be one of"):
        reward.run(
            RewardConfig(head="linear"),
            reward.RewardInputs(prepared["preferences"], sft_model),
            reward.ModelOutputs(str(tmp_path / "rm")),
        )
    assert not (tmp_path / "rm").exists()


RUN_REWARD = """
import json, sys
from rlhf.config import RewardConfig, from_dict
from rlhf.stages import reward
cfg = from_dict(RewardConfig, json.loads(sys.argv[1]))
reward.run(cfg, reward.RewardInputs(sys.argv[2], sys.argv[3]), reward.ModelOutputs(sys.argv[4]))
"""


def test_log_ratio_reward_resumes_after_kill(prepared, micro_models, tmp_path, monkeypatch):
    """Killed after its 4th step, rerun: it resumes there, reuses the cached reference
    log-probs, and publishes the same weights as a run never killed."""
    cfg = RewardConfig(epochs=1, max_steps=8, checkpoint_every=2, batch_size=8, eval_every=0)
    inputs = reward.RewardInputs(prepared["preferences"], micro_models["sft"])
    assert_resumes_with_cached_reference(
        RUN_REWARD,
        json.dumps(to_dict(cfg)),
        [inputs.preferences, inputs.sft_model],
        lambda out, tracker: reward.run(cfg, inputs, reward.ModelOutputs(out), tracker),
        tmp_path,
        monkeypatch,
    )
