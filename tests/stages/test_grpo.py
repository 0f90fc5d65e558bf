"""GRPO stage: the reward rises, a killed run resumes exactly, a NaN loss stops it."""

import json
import logging

import pytest
from killed_run import assert_same_weights, kill_after_checkpoint

from rlhf.config import DistributedConfig, GRPOConfig, to_dict
from rlhf.stages import grpo
from rlhf.tracking import Tracker
from rlhf.training.errors import NonFiniteLossError

GOLD = "rlhf.data.demo_task:gold_reward"
FAST = dict(
    prompts_per_iteration=4, group_size=4, minibatch_size=8, grpo_epochs=2, max_new_tokens=10,
    lr=1e-3, warmup_iterations=0, sample_every=3,
)  # fmt: skip


def test_grpo_raises_the_gold_reward_it_is_trained_on(prepared, micro_models, tmp_path):
    """Trained on the demo's programmatic gold reward (no reward model): it rises."""
    tracker = Tracker()
    cfg = GRPOConfig(iterations=12, reward_function=GOLD, gold_reward=GOLD, **FAST)
    out = tmp_path / "policy"
    metrics = grpo.run(cfg, grpo.GRPOInputs(prepared["prompts"], micro_models["sft"]),
                       grpo.ModelOutputs(str(out)), tracker)  # fmt: skip
    scores = tracker.history("reward/score_mean")
    assert len(scores) == 12
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.1
    for key in ("kl/mean", "policy/kl_ref", "policy/entropy", "policy/clip_fraction",
                "reward/zero_std_groups", "response/length_mean", "gold/mean",
                "guard/entropy_collapse", "guard/length_drift"):  # fmt: skip
        assert tracker.history(key), key
    table = tracker.tables["samples/step_00003.json"]
    assert len(set(table["prompt"][:4])) == 1  # the first group: one prompt, G responses
    history = json.loads((out / grpo.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == list(range(1, 13))
    assert metrics["iterations"] == 12 and metrics["gold_mean"] == history[-1]["gold/mean"]


def test_grpo_with_the_reward_model_and_bad_settings(prepared, micro_models, tmp_path):
    tracker = Tracker()
    cfg = GRPOConfig(iterations=2, kl_coef=0.0, scale_advantages=False, **FAST)
    inputs = grpo.GRPOInputs(prepared["prompts"], micro_models["sft"], micro_models["reward"])
    grpo.run(cfg, inputs, grpo.ModelOutputs(str(tmp_path / "p")), tracker)
    assert len(tracker.history("reward/score_mean")) == 2
    assert tracker.history("kl/coef") == [0.0, 0.0]
    sampling, rollout = (
        tracker.history("time/sampling_seconds"),
        tracker.history("time/rollout_seconds"),
    )
    assert all(0 < s <= r for s, r in zip(sampling, rollout, strict=True)) and len(sampling) == 2
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        grpo.run(GRPOConfig(group_size=1), inputs, grpo.ModelOutputs(str(tmp_path / "q")))
    no_rm = grpo.GRPOInputs(prepared["prompts"], micro_models["sft"])
    with pytest.raises(ValueError, match="needs a reward model"):
        grpo.run(GRPOConfig(**FAST), no_rm, grpo.ModelOutputs(str(tmp_path / "r")))


RUN_GRPO = """
import json, sys
from rlhf.config import GRPOConfig, from_dict
from rlhf.stages import grpo
cfg = from_dict(GRPOConfig, json.loads(sys.argv[1]))
grpo.run(cfg, grpo.GRPOInputs(*sys.argv[2:5]), grpo.ModelOutputs(sys.argv[5]))
"""


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_grpo_resumes_after_kill_and_matches_an_unbroken_run(
    precision, prepared, micro_models, tmp_path, caplog
):
    """Under bf16 autocast the rollouts are sampled from the policy's bf16 copy
    (``rollout_weights: auto``), rebuilt by the resumed run."""
    cfg = GRPOConfig(
        iterations=6, checkpoint_every=2, distributed=DistributedConfig(precision=precision),
        **FAST,
    )  # fmt: skip
    inputs = grpo.GRPOInputs(prepared["prompts"], micro_models["sft"], micro_models["reward"])
    out = tmp_path / "killed" / "policy"
    argv = [inputs.prompts, inputs.sft_model, inputs.reward_model, str(out)]
    ckpts = tmp_path / "killed" / "policy.checkpoints"
    kill_after_checkpoint(RUN_GRPO, [json.dumps(to_dict(cfg)), *argv], ckpts, step=4)
    assert not out.exists()

    tracker = Tracker()
    with caplog.at_level(logging.INFO, logger="rlhf.rollouts"):
        grpo.run(cfg, inputs, grpo.ModelOutputs(str(out)), tracker)
    assert ("on a torch.bfloat16 copy of the policy" in caplog.text) == (precision == "bf16")
    assert int(tracker.tags["resumed_from_step"]) >= 4
    clean = tmp_path / "clean" / "policy"
    grpo.run(cfg, inputs, grpo.ModelOutputs(str(clean)))
    assert_same_weights(out, clean)
    history = json.loads((out / grpo.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == list(range(1, 7))


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
    prepared, micro_models, tmp_path, monkeypatch
):
    real = grpo.grpo_policy_loss
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss, stats = real(*args)
        return (loss * float("nan"), stats) if calls["n"] > 12 else (loss, stats)

    monkeypatch.setattr(grpo, "grpo_policy_loss", poisoned)
    out = tmp_path / "policy"
    cfg = GRPOConfig(iterations=6, checkpoint_every=2, reward_function=GOLD, **FAST)
    # 16 responses, minibatches of 8, 2 epochs: 4 steps per iteration; call 13 is iteration 3
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 3.*step-00000002"):
        grpo.run(cfg, grpo.GRPOInputs(prepared["prompts"], micro_models["sft"]),
                 grpo.ModelOutputs(str(out)))  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp"])
def test_rloo_and_reinforce_pp_raise_the_gold_reward(estimator, prepared, micro_models, tmp_path):
    """The other estimators on the same loop, trained on the demo's gold reward: it rises."""
    tracker = Tracker()
    cfg = GRPOConfig(iterations=12, reward_function=GOLD, estimator=estimator, **FAST)
    out = tmp_path / "policy"
    metrics = grpo.run(cfg, grpo.GRPOInputs(prepared["prompts"], micro_models["sft"]),
                       grpo.ModelOutputs(str(out)), tracker)  # fmt: skip
    scores = tracker.history("reward/score_mean")
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.1, scores
    assert metrics["iterations"] == 12
    assert json.loads((out / "manifest.json").read_text())["estimator"] == estimator
    with pytest.raises(ValueError, match="estimator must be one of"):
        GRPOConfig(estimator="ppo")
