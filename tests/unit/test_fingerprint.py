"""Run fingerprints: which fields make a checkpoint another run's, and the resume check."""

import dataclasses
import json
import logging

import pytest

from rlhf.config import DPOConfig, GRPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhf.stages.ppo import PPOInputs
from rlhf.stages.sft import SFTInputs
from rlhf.training import checkpoint as ckpt
from rlhf.training.errors import CheckpointMismatchError
from rlhf.training.fingerprint import (
    ABSENT,
    RESUME_SAFE_FIELDS,
    Difference,
    fingerprint_differences,
    run_fingerprint,
)

TRAINING_CONFIGS = (SFTConfig, RewardConfig, DPOConfig, PPOConfig, GRPOConfig)


def test_differences_name_each_changed_setting_and_input():
    before = run_fingerprint("sft", SFTConfig(), SFTInputs("s3://bucket/sft-a"))
    after = run_fingerprint(
        "sft", SFTConfig(lr=1e-4, base_model="preset:micro-llama"), SFTInputs("s3://bucket/sft-b")
    )
    assert fingerprint_differences(before, after) == [
        Difference("config.lr", 2e-3, 1e-4),
        Difference("config.base_model", "preset:tiny-llama", "preset:micro-llama"),
        Difference("inputs.data", "s3://bucket/sft-a", "s3://bucket/sft-b"),
    ]
    assert fingerprint_differences(before, before) == []
    other_stage = run_fingerprint("dpo", SFTConfig(), SFTInputs("s3://bucket/sft-a"))
    assert fingerprint_differences(before, other_stage) == [Difference("stage", "sft", "dpo")]


def test_resume_safe_fields_are_ignored():
    inputs = PPOInputs("prompts", "sft", "reward")
    safe = dict(
        checkpoint_every=3, keep_checkpoints=0, checkpoint_dir="/mnt/ckpt", publish_to="s3://b/p",
        log_model_artifacts=False, log_every=5, sample_every=0, samples_logged=2,
        gold_reward="rlhf.data.demo_task:gold_reward", entropy_floor=0.0, length_drift=9.0,
        device="cpu", trust_remote_code=True,
    )  # fmt: skip
    changed = PPOConfig(**safe)
    assert (
        fingerprint_differences(
            run_fingerprint("ppo", PPOConfig(), inputs), run_fingerprint("ppo", changed, inputs)
        )
        == []
    )
    train_safe = dict(eval_every=1, eval_batch_size=4, log_every=1, checkpoint_every=1)
    assert (
        fingerprint_differences(
            run_fingerprint("sft", SFTConfig(), SFTInputs("d")),
            run_fingerprint("sft", SFTConfig(**train_safe), SFTInputs("d")),
        )
        == []
    )


def test_every_other_config_field_is_in_the_fingerprint():
    names = {f.name for cls in TRAINING_CONFIGS for f in dataclasses.fields(cls)}
    assert RESUME_SAFE_FIELDS - names == set()  # no stale name: each is a real config field
    for cls in TRAINING_CONFIGS:
        recorded = run_fingerprint("x", cls(), SFTInputs("d"))["config"]
        expected = {f.name for f in dataclasses.fields(cls)} - RESUME_SAFE_FIELDS
        assert set(recorded) == expected, cls.__name__
        assert {"seed", "lr", "dtype", "chat_template"} <= set(recorded)


def test_a_field_the_checkpoint_lacks_is_a_difference_and_local_paths_compare_resolved(
    tmp_path, monkeypatch
):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = run_fingerprint("sft", SFTConfig(), SFTInputs("data"))
    absolute = run_fingerprint("sft", SFTConfig(), SFTInputs(str(tmp_path / "data")))
    assert fingerprint_differences(relative, absolute) == []
    older = json.loads(json.dumps(relative))
    del older["config"]["vocab_size"]
    assert fingerprint_differences(older, relative) == [
        Difference("config.vocab_size", ABSENT, 512)
    ]


def test_resume_checkpoint_checks_the_newest_checkpoint(tmp_path, caplog):
    fingerprint = run_fingerprint("sft", SFTConfig(lr=1e-3), SFTInputs("s3://b/sft"))
    assert ckpt.resume_checkpoint(tmp_path, fingerprint) is None  # nothing to resume
    saved = ckpt.save_checkpoint(tmp_path, 4, {"step": 4}, fingerprint=fingerprint)
    assert ckpt.resume_checkpoint(tmp_path, fingerprint) == saved

    changed = run_fingerprint("sft", SFTConfig(lr=2e-3), SFTInputs("s3://b/sft"))
    with pytest.raises(CheckpointMismatchError) as raised:
        ckpt.resume_checkpoint(tmp_path, changed)
    message = str(raised.value)
    assert str(saved) in message and str(tmp_path) in message
    assert "config.lr: 0.001 in the checkpoint, 0.002 now" in message
    assert "fresh checkpoint_dir" in message and f"delete {tmp_path}" in message
    assert isinstance(raised.value, ValueError)  # the CLI: a config error, exit 2

    # A checkpoint written before fingerprints existed still resumes, with a warning.
    legacy = ckpt.save_checkpoint(tmp_path, 8, {"step": 8})
    assert "run" not in json.loads((legacy / "meta.json").read_text())
    with caplog.at_level(logging.WARNING, logger="rlhf.checkpoint"):
        assert ckpt.resume_checkpoint(tmp_path, changed) == legacy
    assert "no run fingerprint" in caplog.text
