"""PPO stage: the RM score rises, a killed run resumes exactly, a NaN loss stops it."""

import json

import pytest
from killed_run import assert_same_weights, kill_after_checkpoint

from rlhf.config import PPOConfig, to_dict
from rlhf.stages import ppo, ppo_experience
from rlhf.tracking import Tracker
from rlhf.training.errors import NonFiniteLossError

FAST = dict(
    rollout_batch_size=16, minibatch_size=8, ppo_epochs=2, max_new_tokens=10, lr=1e-3,
    critic_lr=1e-3, warmup_iterations=0, sample_every=3,
)  # fmt: skip


def _inputs(prepared, micro_models, reward_model="reward"):
    return ppo.PPOInputs(
        prepared["prompts"], micro_models["sft"], micro_models[reward_model], prepared["sft"]
    )


@pytest.mark.parametrize("reward_model", ["reward", "reward_scalar"])
def test_ppo_raises_the_reward_model_score(prepared, micro_models, tmp_path, reward_model):
    """Against either reward head (log_ratio, or scalar whose head the critic keeps)."""
    tracker = Tracker()
    cfg = PPOConfig(iterations=12, gold_reward="rlhf.data.demo_task:gold_reward", **FAST)
    out = tmp_path / "policy"
    inputs = _inputs(prepared, micro_models, reward_model)
    metrics = ppo.run(cfg, inputs, ppo.ModelOutputs(str(out)), tracker)
    scores = tracker.history("reward/score_mean")
    assert len(scores) == 12
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 0.1
    for key in ("kl/mean", "kl/coef", "policy/entropy", "policy/clip_fraction",
                "policy/approx_kl", "loss/value", "value/explained_variance",
                "response/length_mean", "gold/mean"):  # fmt: skip
        assert tracker.history(key), key
    # Where each iteration's time went: sampling is part of the rollout (scoring the rest).
    sampling, rollout = (
        tracker.history("time/sampling_seconds"),
        tracker.history("time/rollout_seconds"),
    )
    assert len(sampling) == len(tracker.history("time/update_seconds")) == 12
    assert all(0 < s <= r for s, r in zip(sampling, rollout, strict=True))
    assert "samples/step_00003.json" in tracker.tables
    history = json.loads((out / ppo.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == list(range(1, 13))
    assert metrics["iterations"] == 12
    assert (out / "model.safetensors").exists() and (out / "manifest.json").exists()


def test_ppo_penalty_variant_and_ptx_run(prepared, micro_models, tmp_path):
    tracker = Tracker()
    cfg = PPOConfig(
        iterations=2, policy_loss="penalty", ptx_coef=0.5, kl_estimator="k3",
        kl_control="fixed", **FAST,
    )  # fmt: skip
    ppo.run(cfg, _inputs(prepared, micro_models), ppo.ModelOutputs(str(tmp_path / "p")), tracker)
    assert tracker.history("policy/penalty_beta")
    assert tracker.history("loss/ptx")
    assert tracker.history("kl/coef") == [cfg.kl_coef] * 2  # fixed: never adapted
    assert min(tracker.history("kl/mean")) >= 0  # k3 is never negative


RUN_PPO = """
import json, sys
from rlhf.config import PPOConfig, from_dict
from rlhf.stages import ppo, ppo_experience
cfg = from_dict(PPOConfig, json.loads(sys.argv[1]))
ppo.run(cfg, ppo.PPOInputs(*sys.argv[2:6]), ppo.ModelOutputs(sys.argv[6]))
"""


def test_scoring_a_rollout_in_chunks_trains_alike(prepared, micro_models, tmp_path, monkeypatch):
    """``scoring_batch_size: 6`` scores each 16-row rollout in forwards of 6, 6 and 4 rows
    (policy, reference and critic alike); training goes as with one forward, to rounding."""
    seen = []
    forward = ppo.TokenValues.forward

    def counted(self, input_ids, attention_mask):
        seen.append(len(input_ids))
        return forward(self, input_ids, attention_mask)

    monkeypatch.setattr(ppo.TokenValues, "forward", counted)
    histories = []
    for rows in (None, 6):
        tracker = Tracker()
        cfg = PPOConfig(iterations=2, scoring_batch_size=rows, **FAST)
        ppo.run(cfg, _inputs(prepared, micro_models), ppo.ModelOutputs(str(tmp_path / str(rows))),
                tracker)  # fmt: skip
        histories.append(tracker)
    assert seen.count(16) == 2 and seen.count(6) == 4 and seen.count(4) == 2  # + minibatches of 8
    for key in ("reward/score_mean", "kl/mean", "value/explained_variance", "loss/policy"):
        assert histories[1].history(key) == pytest.approx(histories[0].history(key), abs=1e-4)


def test_ppo_resumes_after_kill_and_matches_an_unbroken_run(prepared, micro_models, tmp_path):
    cfg = PPOConfig(iterations=16, checkpoint_every=2, **FAST)
    inputs = _inputs(prepared, micro_models)
    out = tmp_path / "killed" / "policy"
    argv = [inputs.prompts, inputs.sft_model, inputs.reward_model, inputs.sft_data, str(out)]
    ckpts = tmp_path / "killed" / "policy.checkpoints"
    kill_after_checkpoint(RUN_PPO, [json.dumps(to_dict(cfg)), *argv], ckpts, step=4)
    assert not out.exists()

    tracker = Tracker()
    ppo.run(cfg, inputs, ppo.ModelOutputs(str(out)), tracker)
    assert int(tracker.tags["resumed_from_step"]) >= 4
    clean = tmp_path / "clean" / "policy"
    ppo.run(cfg, inputs, ppo.ModelOutputs(str(clean)))
    assert_same_weights(out, clean)
    history = json.loads((out / ppo.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == list(range(1, 17))


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
    prepared, micro_models, tmp_path, monkeypatch
):
    real = ppo_experience.clipped_value_loss
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss, stats = real(*args)
        return (loss * float("nan"), stats) if calls["n"] > 12 else (loss, stats)

    monkeypatch.setattr(ppo_experience, "clipped_value_loss", poisoned)
    out = tmp_path / "policy"
    cfg = PPOConfig(iterations=6, checkpoint_every=2, **FAST)  # 4 minibatch steps per iteration
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 3.*step-00000002"):
        ppo.run(cfg, _inputs(prepared, micro_models), ppo.ModelOutputs(str(out)))
    assert not out.exists()
