"""Online DPO stage: rounds of sampling, scoring, pairing and DPO log their metrics, a judge
replaces the reward model by one setting, a killed run resumes exactly."""

import json

import pytest
from killed_run import assert_same_weights, kill_after_checkpoint

from rlhf.config import OnlineDPOConfig, to_dict
from rlhf.stages import online_dpo
from rlhf.tracking import Tracker

GOLD = "rlhf.data.demo_task:gold_reward"
FAST = dict(
    prompts_per_iteration=4, samples_per_prompt=4, minibatch_size=4, dpo_epochs=2,
    max_new_tokens=10, lr=1e-3, warmup_iterations=0, sample_every=2,
)  # fmt: skip


def first_answer_wins(prompt, answers):
    """A judge for the tests: the answers rank in the order they were sampled."""
    return [float(len(answers) - i) for i in range(len(answers))]


def all_tie(prompt, answers):
    return [0.0] * len(answers)


def wrong_count(prompt, answers):
    return [1.0]


def test_online_dpo_rounds_log_their_metrics(prepared, micro_models, tmp_path):
    """Two rounds against the reward model: every per-round metric is in the history and in
    the tracker; best-vs-worst gives one pair per prompt (the micro RM never ties)."""
    tracker = Tracker()
    cfg = OnlineDPOConfig(iterations=2, gold_reward=GOLD, **FAST)
    out = tmp_path / "policy"
    inputs = online_dpo.OnlineDPOInputs(
        prepared["prompts"], micro_models["sft"], micro_models["reward"]
    )
    metrics = online_dpo.run(cfg, inputs, online_dpo.ModelOutputs(str(out)), tracker)
    for key in ("reward/score_mean", "reward/chosen_mean", "reward/rejected_mean",
                "pairs/count", "pairs/tied_prompts", "gold/mean", "gold/pair_accuracy",
                "loss/dpo", "dpo/accuracy", "dpo/margin", "kl/mean", "policy/entropy",
                "response/length_mean", "guard/length_drift"):  # fmt: skip
        assert len(tracker.history(key)) == 2, key
    assert tracker.history("pairs/count") == [4.0, 4.0]
    chosen, rejected = (
        tracker.history("reward/chosen_mean"),
        tracker.history("reward/rejected_mean"),
    )
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))
    # Round 1 starts at the SFT model: DPO's first loss is near log 2 and KL is ~0.
    assert tracker.history("kl/mean")[0] == pytest.approx(0.0, abs=1e-4)
    assert 0.3 < tracker.history("loss/dpo")[0] < 1.0
    history = json.loads((out / online_dpo.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == [1, 2]
    assert metrics["pairs_total"] == 8.0 and metrics["gold_mean"] == history[-1]["gold/mean"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact"] == "online_dpo_policy"
    assert "samples/step_00002.json" in tracker.tables


def test_a_judge_replaces_the_reward_model(prepared, micro_models, tmp_path):
    """judge set, no reward model: "all" pairs give K(K-1)/2 per prompt; a judge that ties
    everything gives no pair and no update; a judge returning the wrong count is named."""
    inputs = online_dpo.OnlineDPOInputs(prepared["prompts"], micro_models["sft"])
    tracker = Tracker()
    cfg = OnlineDPOConfig(iterations=1, judge=f"{__name__}:first_answer_wins", pairs="all",
                          reference="previous_round", **FAST)  # fmt: skip
    online_dpo.run(cfg, inputs, online_dpo.ModelOutputs(str(tmp_path / "a")), tracker)
    assert tracker.history("pairs/count") == [4 * 6.0]
    assert tracker.history("reward/chosen_mean")[0] > tracker.history("reward/rejected_mean")[0]
    assert len(tracker.history("loss/dpo")) == 1

    tracker = Tracker()
    cfg = OnlineDPOConfig(iterations=1, judge=f"{__name__}:all_tie", **FAST)
    online_dpo.run(cfg, inputs, online_dpo.ModelOutputs(str(tmp_path / "b")), tracker)
    assert tracker.history("pairs/count") == [0.0]
    assert tracker.history("pairs/tied_prompts") == [1.0]
    assert not tracker.history("loss/dpo")

    cfg = OnlineDPOConfig(iterations=1, judge=f"{__name__}:wrong_count", **FAST)
    with pytest.raises(ValueError, match="wrong_count: expected 4 finite scores"):
        online_dpo.run(cfg, inputs, online_dpo.ModelOutputs(str(tmp_path / "c")))
    with pytest.raises(ValueError, match="needs a reward model"):
        online_dpo.run(
            OnlineDPOConfig(**FAST), inputs, online_dpo.ModelOutputs(str(tmp_path / "d"))
        )


RUN_ONLINE_DPO = """
import json, sys
from rlhf.config import OnlineDPOConfig, from_dict
from rlhf.stages import online_dpo
cfg = from_dict(OnlineDPOConfig, json.loads(sys.argv[1]))
online_dpo.run(cfg, online_dpo.OnlineDPOInputs(*sys.argv[2:5]), online_dpo.ModelOutputs(sys.argv[5]))
"""


def test_online_dpo_resumes_after_kill_and_matches_an_unbroken_run(
    prepared, micro_models, tmp_path
):
    cfg = OnlineDPOConfig(iterations=4, checkpoint_every=1, **FAST)
    inputs = online_dpo.OnlineDPOInputs(
        prepared["prompts"], micro_models["sft"], micro_models["reward"]
    )
    out = tmp_path / "killed" / "policy"
    argv = [inputs.prompts, inputs.sft_model, inputs.reward_model, str(out)]
    ckpts = tmp_path / "killed" / "policy.checkpoints"
    kill_after_checkpoint(RUN_ONLINE_DPO, [json.dumps(to_dict(cfg)), *argv], ckpts, step=2)
    assert not out.exists()

    tracker = Tracker()
    online_dpo.run(cfg, inputs, online_dpo.ModelOutputs(str(out)), tracker)
    assert int(tracker.tags["resumed_from_step"]) >= 2
    clean = tmp_path / "clean" / "policy"
    online_dpo.run(cfg, inputs, online_dpo.ModelOutputs(str(clean)))
    assert_same_weights(out, clean)
    history = json.loads((out / online_dpo.HISTORY_FILE).read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4]
