"""SFT stage: it learns, it resumes after a kill exactly where it stopped, it refuses another
run's checkpoint, it stops on NaN."""

import dataclasses
import json
from pathlib import Path

import pytest
from killed_run import assert_same_weights, kill_after_checkpoint

from rlhf.config import SFTConfig, to_dict
from rlhf.stages import sft
from rlhf.tracking import Tracker
from rlhf.training.errors import CheckpointMismatchError, NonFiniteLossError

FAST = dict(base_model="preset:tiny-llama", batch_size=16, log_every=5, eval_every=0, lr=3e-3)


def test_sft_learns_and_publishes(prepared, tmp_path):
    out = tmp_path / "model"
    tracker = Tracker()
    metrics = sft.run(
        SFTConfig(epochs=4, **FAST),
        sft.SFTInputs(prepared["sft"]),
        sft.ModelOutputs(str(out)),
        tracker,
    )
    assert metrics["val_loss"] < 0.6 * metrics["val_loss_start"]
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "model.safetensors", "tokenizer.json", "config.json"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["val_loss"] == pytest.approx(metrics["val_loss"])
    assert manifest["data_sha256"]
    assert not Path(f"{out}.checkpoints").exists()  # cleaned up once the model is published
    assert tracker.history("train/loss")[-1] < tracker.history("train/loss")[0]
    assert tracker.params["sft.lr"] == FAST["lr"]


RUN_SFT = """
import json, sys
from rlhf.config import SFTConfig, from_dict
from rlhf.stages import sft
cfg = from_dict(SFTConfig, json.loads(sys.argv[1]))
sft.run(cfg, sft.SFTInputs(sys.argv[2]), sft.ModelOutputs(sys.argv[3]))
"""


def test_sft_resumes_after_kill_and_matches_an_unbroken_run(prepared, tmp_path):
    # 23 steps an epoch: killed at step 10, the resumed run crosses two epoch boundaries.
    cfg = SFTConfig(epochs=3, checkpoint_every=5, keep_checkpoints=2, **FAST)
    ckpts = tmp_path / "killed" / "model.checkpoints"
    out = tmp_path / "killed" / "model"
    kill_after_checkpoint(RUN_SFT, [json.dumps(to_dict(cfg)), prepared["sft"], str(out)], ckpts, 10)
    assert not out.exists()  # nothing published by the killed run

    tracker = Tracker()
    resumed = sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(out)), tracker)
    assert int(tracker.tags["resumed_from_step"]) >= 10

    clean_out = tmp_path / "clean" / "model"
    clean = sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(clean_out)))
    assert resumed["steps"] == clean["steps"]
    assert_same_weights(out, clean_out)


def test_sft_refuses_to_resume_a_checkpoint_made_with_another_config(prepared, tmp_path):
    """A kept checkpoint_dir resumes only a run with the same settings: a changed lr stops
    before anything trains, naming the field; a changed checkpoint_every resumes."""
    ckpts = tmp_path / "ckpt"
    cfg = SFTConfig(
        base_model="preset:micro-llama", epochs=1, max_steps=4, checkpoint_every=2,
        batch_size=16, eval_every=0, checkpoint_dir=str(ckpts),
    )  # fmt: skip
    inputs = sft.SFTInputs(prepared["sft"])
    sft.run(cfg, inputs, sft.ModelOutputs(str(tmp_path / "first")))
    assert [p.name for p in ckpts.glob("step-*")] == ["step-00000002"]  # kept: checkpoint_dir

    changed = dataclasses.replace(cfg, lr=cfg.lr / 2)
    with pytest.raises(
        CheckpointMismatchError, match=r"config\.lr: 0\.002 in the checkpoint, 0\.001 now"
    ):
        sft.run(changed, inputs, sft.ModelOutputs(str(tmp_path / "second")))
    assert not (tmp_path / "second").exists()

    tracker = Tracker()
    same_run = dataclasses.replace(cfg, checkpoint_every=3, log_every=1)  # resume-safe fields
    sft.run(same_run, inputs, sft.ModelOutputs(str(tmp_path / "third")), tracker)
    assert int(tracker.tags["resumed_from_step"]) == 2


def test_non_finite_loss_stops_with_a_clear_error(prepared, tmp_path, monkeypatch):
    real = sft.response_nll
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 12 else loss

    monkeypatch.setattr(sft, "response_nll", poisoned)
    out = tmp_path / "model"
    cfg = SFTConfig(epochs=1, checkpoint_every=5, **FAST)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 11.*step-00000010"):
        sft.run(cfg, sft.SFTInputs(prepared["sft"]), sft.ModelOutputs(str(out)))
    assert not out.exists()
