"""Every trainer run by ``torchrun --nproc_per_node 2`` (gloo, CPU) under ZeRO ends
where one process ends on the same global batches (PPO and GRPO: where plain DDP ends on the
same ranks); a rank killed mid-run stops the run, which then resumes to the same weights; a
ZeRO config without DeepSpeed fails clearly.

``make test`` runs SFT under ZeRO-3 and the missing-DeepSpeed check; the rest (marker
``distributed``, minutes of torchrun launches) runs in ``make test-distributed``.

Tolerance: weights within rtol 1e-4 / atol 1e-5 of the single-process run. The ranks sum the
same numbers in another order (each rank's share of a batch, then the all-reduce), so bitwise
equality is not expected; measured differences are about 1e-6.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from launch import ENV, assert_same_weights, kill_one_rank_after_checkpoint, run_stage

from rlhf.config import DistributedConfig
from rlhf.training import engine

SHORT = ["--no-track", "--set", "max_steps=4", "--set", "eval_every=0",
         "--set", "batch_size=16", "--set", "checkpoint_every=2"]  # fmt: skip


def _sft_args(prepared: dict[str, str], out: Path, *extra: str) -> list[str]:
    return ["sft", "--data", prepared["sft"], "--out", str(out), *SHORT,
            "--set", "base_model=preset:micro-llama", "--set", "grad_accum=2", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def sft_single(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft-single") / "model"
    run_stage(_sft_args(prepared, out))
    return out


@pytest.fixture(scope="module")
def sft_zero3(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft-zero3") / "model"
    run_stage(_sft_args(prepared, out, "--set", "distributed.zero_stage=3"), ranks=2)
    return out


def test_sft_on_two_ranks_under_zero3_matches_one_process(sft_single, sft_zero3) -> None:
    assert_same_weights(sft_single, sft_zero3)
    # The published folder is a whole model in safetensors that plain transformers loads.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sft_zero3)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.distributed
def test_a_killed_rank_stops_the_run_which_resumes_to_the_same_weights(
    prepared, sft_zero3, tmp_path
) -> None:
    out = tmp_path / "model"
    args = _sft_args(prepared, out, "--set", "distributed.zero_stage=3")
    killed = kill_one_rank_after_checkpoint(args, Path(f"{out}.checkpoints"), step=2)
    assert killed.returncode != 0
    assert not out.exists()
    resumed = run_stage(args, ranks=2)
    assert "resuming from" in resumed.stderr
    assert_same_weights(sft_zero3, out, rtol=0, atol=0)


@pytest.mark.distributed
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_reward_model_on_two_ranks_matches_one_process(
    prepared, micro_models, tmp_path, zero_stage
) -> None:
    args = ["reward", "--preferences", prepared["preferences"], "--sft-model",
            micro_models["sft"], *SHORT]  # fmt: skip
    run_stage([*args, "--out", str(tmp_path / "one")])
    run_stage([*args, "--out", str(tmp_path / "two"), "--set",
               f"distributed.zero_stage={zero_stage}"], ranks=2)  # fmt: skip
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert (tmp_path / "two" / "reference" / "model.safetensors").exists()


@pytest.mark.distributed
def test_dpo_on_two_ranks_under_zero3_matches_one_process(prepared, micro_models, tmp_path):
    args = ["dpo", "--preferences", prepared["preferences"], "--sft-model",
            micro_models["sft"], *SHORT]  # fmt: skip
    run_stage([*args, "--out", str(tmp_path / "one")])
    run_stage([*args, "--out", str(tmp_path / "two"), "--set", "distributed.zero_stage=3"],
              ranks=2)  # fmt: skip
    assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_zero_without_deepspeed_fails_clearly(prepared, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError
    with pytest.raises(ValueError, match=r"zero_stage=2 needs DeepSpeed, which is not installed"):
        engine.uses_deepspeed(DistributedConfig(zero_stage=2))
    assert engine.uses_deepspeed(DistributedConfig(zero_stage=0)) is False  # plain PyTorch
    # The command stops before training, with the message and no traceback.
    script = "import sys; sys.modules['deepspeed'] = None; from rlhf.cli import main; " \
             "sys.exit(main(sys.argv[1:]))"  # fmt: skip
    out = tmp_path / "model"
    args = _sft_args(prepared, out, "--set", "distributed.zero_stage=2")
    done = subprocess.run([sys.executable, "-c", script, *args], env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "needs DeepSpeed, which is not installed" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


ON_POLICY = {
    "ppo": ["--set", "rollout_batch_size=8", "--set", "minibatch_size=4"],
    "grpo": ["--set", "prompts_per_iteration=4", "--set", "group_size=4",
             "--set", "minibatch_size=8"],
}  # fmt: skip


@pytest.mark.distributed
@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_on_policy_stage_under_zero3_matches_plain_ddp(
    prepared, micro_models, tmp_path, stage
) -> None:
    """Each rank samples its share of the prompts with its own random stream, so two ranks do
    not sample what one process samples; on the same two ranks ZeRO-3 (sharded weights,
    gathered for the rollouts) must end where plain DDP ends."""
    args = [stage, "--prompts", prepared["prompts"], "--sft-model", micro_models["sft"],
            "--reward-model", micro_models["reward"], "--no-track", "--set", "iterations=3",
            "--set", "max_new_tokens=8", "--set", "checkpoint_every=2", *ON_POLICY[stage]]  # fmt: skip
    run_stage([*args, "--out", str(tmp_path / "ddp")], ranks=2)
    run_stage([*args, "--out", str(tmp_path / "zero3"), "--set", "distributed.zero_stage=3"],
              ranks=2)  # fmt: skip
    assert_same_weights(tmp_path / "ddp", tmp_path / "zero3")
