"""The on-policy loop with a toy algorithm (one weight fitted to random targets): gradient-step
numbering, stats averaging, the timing metrics, the non-finite guard, and resume to the same
weights."""

import time

import pytest
import torch

from rlhf.config import DistributedConfig, OnPolicyConfig
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training.engine import build_engine
from rlhf.training.errors import NonFiniteLossError
from rlhf.training.on_policy_loop import Experience, OnPolicyAlgorithm, Trained, train_on_policy

CONFIG = OnPolicyConfig(
    iterations=4, lr=0.1, warmup_iterations=0, checkpoint_every=2, sample_every=0
)


def _toy(steps_seen: list[int], nan_at: int = -1) -> tuple[OnPolicyAlgorithm, torch.nn.Linear]:
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    engine = build_engine(model, CONFIG.lr, 0.0, CONFIG.max_grad_norm, DistributedConfig(),
                          torch.device("cpu"))  # fmt: skip

    def rollout(rows: list[int], iteration: int) -> Experience:
        time.sleep(0.02)
        targets = torch.rand(4)  # the RNG a resumed run must continue
        stats = {"reward/score_mean": 0.0, "kl/mean": 0.0, "response/length_mean": 1.0}
        return Experience(targets, 4, stats, ([], [], []))

    def loss(targets: torch.Tensor, mb: torch.Tensor, gradient_step: int):
        steps_seen.append(gradient_step)
        value = ((model.weight[0, 0] - targets[mb]) ** 2).mean()
        if gradient_step == nan_at:
            value = value * float("nan")
        return {"policy": value}, {"loss/step": float(gradient_step), "policy/entropy": 1.0}

    algorithm = OnPolicyAlgorithm(
        name="toy",
        trained=[Trained("policy", engine, CONFIG.lr)],
        prompts_per_iteration=2,
        epochs=2,
        minibatch_size=2,
        rollout=rollout,
        loss=loss,
    )
    return algorithm, model


def _train(algorithm, root, resume=None, tracker=None):
    return train_on_policy(algorithm, CONFIG, 10, torch.device("cpu"), tracker or Tracker(),
                           0.0, root, {"run": "toy"}, resume)  # fmt: skip


def test_gradient_steps_are_numbered_over_the_run_and_stats_averaged(tmp_path):
    steps: list[int] = []
    history = _train(_toy(steps)[0], tmp_path)
    # 4 rows, minibatches of 2, 2 epochs: 4 gradient steps per iteration.
    assert steps == list(range(16))
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert [h["loss/step"] for h in history] == [1.5, 5.5, 9.5, 13.5]  # mean of 0..3, 4..7, ...
    assert history[0]["guard/entropy_collapse"] == 0.0
    # The last iteration saves no checkpoint: the published model supersedes it.
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000002"]


def test_each_iteration_logs_the_seconds_its_rollout_sampling_and_update_took(tmp_path):
    algorithm, _ = _toy([])
    clock = iter([0.5, 0.25, 0.125, 0.0625])  # seconds "sampled" in each iteration
    algorithm.sampling_clock = lambda: next(clock)
    tracker = Tracker()
    history = _train(algorithm, tmp_path, tracker=tracker)
    assert tracker.history("time/sampling_seconds") == [0.5, 0.25, 0.125, 0.0625]
    rollout, update = (
        tracker.history("time/rollout_seconds"),
        tracker.history("time/update_seconds"),
    )
    assert len(rollout) == len(update) == 4
    assert all(0.02 <= s < 5 for s in rollout) and all(0 < s < 5 for s in update)
    # Metrics only: a history holds what a resumed run reproduces.
    assert not any(key.startswith("time/") for row in history for key in row)


def test_a_non_finite_loss_stops_the_run(tmp_path):
    expected = r"toy: loss is nan at iteration 1 \(loss/step 5.0\); stopping. Last good checkpoint"
    with pytest.raises(NonFiniteLossError, match=expected + ": none yet"):
        _train(_toy([], nan_at=5)[0], tmp_path)


def test_a_resumed_run_ends_with_the_same_weights_and_history(tmp_path):
    torch.manual_seed(0)
    algorithm, unbroken = _toy([])
    history = _train(algorithm, tmp_path / "a")

    torch.manual_seed(123)  # whatever the RNG is now, the checkpoint's is restored
    algorithm, resumed = _toy([])
    tracker = Tracker()
    saved = ckpt.latest_checkpoint(tmp_path / "a")
    history_resumed = _train(algorithm, tmp_path / "b", saved, tracker)
    assert int(tracker.tags["resumed_from_step"]) == 2
    assert torch.equal(resumed.weight, unbroken.weight)
    assert history_resumed == history
