"""Every trainer run by ``torchrun --nproc_per_node 2`` (or DeepSpeed's launcher; gloo, CPU)
under ZeRO ends where one process ends on the same global batches (PPO, GRPO and online DPO:
where plain DDP ends on the same ranks; online DPO with ranks that make different numbers of
pairs); a rank killed mid-run stops the run, which then resumes to the same weights; a ZeRO
config without DeepSpeed fails clearly.

``make test`` runs SFT and the reward model (full) and DPO (LoRA) under ZeRO-3, PPO (full)
against DDP, the bf16 master-weights check and the missing-DeepSpeed check; the other stage x
LoRA pairs, online DPO, ZeRO-2 and the killed-rank resume (marker ``distributed``, minutes more
of torchrun launches) run in ``make test-distributed``.

Tolerance: weights within rtol 1e-4 / atol 1e-5 of the single-process run. The ranks sum the
same numbers in another order (each rank's share of a batch, then the all-reduce), so bitwise
equality is not expected; measured differences are about 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launch import ENV, assert_same_weights, kill_one_rank_after_checkpoint, run_stage
from safetensors.torch import load_file

from rlhf.config import DistributedConfig
from rlhf.training import engine

SHORT = ["--no-track", "--set", "max_steps=4", "--set", "eval_every=0",
         "--set", "batch_size=16", "--set", "checkpoint_every=2"]  # fmt: skip
ZERO3 = ["--set", "distributed.zero_stage=3"]
LORA = ["--set", "lora.r=4", "--set", "lora.alpha=8"]


def _stage_args(stage: str, prepared: dict[str, str], micro_models: dict[str, str]) -> list[str]:
    if stage == "sft":
        return ["sft", "--data", prepared["sft"], *SHORT, "--set", "base_model=preset:micro-llama",
                "--set", "grad_accum=2"]  # fmt: skip
    return [stage, "--preferences", prepared["preferences"], "--sft-model", micro_models["sft"],
            *SHORT]  # fmt: skip


def _sft_args(prepared: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [*_stage_args("sft", prepared, {}), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def sft_zero3(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft-zero3") / "model"
    run_stage(_sft_args(prepared, out, *ZERO3), ranks=2)
    return out


def _matrix(stages: list[str], in_make_test: set[tuple[str, bool]]) -> list:
    """(stage, lora) for each stage, with and without LoRA; the pairs not ``in_make_test`` run
    in ``make test-distributed`` only (marker ``distributed``)."""
    return [
        pytest.param(stage, lora, id=f"{stage}-{'lora' if lora else 'full'}",
                     marks=() if (stage, lora) in in_make_test else pytest.mark.distributed)
        for stage in stages
        for lora in (False, True)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "stage, lora",
    _matrix(["sft", "reward", "dpo"], {("sft", False), ("reward", False), ("dpo", True)}),
)
def test_supervised_stage_on_two_ranks_under_zero3_matches_one_process(
    prepared, micro_models, tmp_path, stage, lora
) -> None:
    """2 ranks under ZeRO-3 (weights loaded into shards, the reference log-probs computed by
    both ranks on a sharded reference) end at the one-process weights; with LoRA the
    sharded adapters are merged into a plain model on publishing. SFT runs under DeepSpeed's
    launcher, the others under torchrun."""
    args = [*_stage_args(stage, prepared, micro_models), *(LORA if lora else [])]
    run_stage([*args, "--out", str(tmp_path / "one")], in_process=True)
    launcher = "deepspeed" if stage == "sft" and not lora else "torchrun"
    two = run_stage([*args, "--out", str(tmp_path / "two"), *ZERO3], ranks=2, launcher=launcher)
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    if stage == "sft" and not lora:
        # The whole model in safetensors, as plain transformers loads it.
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
        assert sum(p.numel() for p in model.parameters()) > 0
    if stage == "dpo" and not lora:
        assert "reference (frozen): sharded across 2 ranks (ZeRO-3)" in two.stderr
    if stage == "reward":
        assert (tmp_path / "two" / "reference" / "model.safetensors").exists()
    if lora:  # merged: no adapter files, no peft names
        assert not (tmp_path / "two" / "adapter_config.json").exists()


@pytest.mark.distributed
@pytest.mark.parametrize("stage", ["sft", "reward", "dpo"])
def test_supervised_stage_on_two_ranks_under_zero2_matches_one_process(
    prepared, micro_models, tmp_path, stage
) -> None:
    args = _stage_args(stage, prepared, micro_models)
    run_stage([*args, "--out", str(tmp_path / "one")], in_process=True)
    run_stage([*args, "--out", str(tmp_path / "two"), "--set", "distributed.zero_stage=2"],
              ranks=2)  # fmt: skip
    assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_bf16_under_deepspeed_publishes_the_fp32_master_weights(prepared, tmp_path) -> None:
    """Under bf16 the module computes with bf16 copies; what is published is the optimizer's
    fp32 master copy, whose values a bf16 tensor cannot hold (one process, ZeRO-2)."""
    out = tmp_path / "model"
    run_stage(_sft_args(prepared, out, "--set", "distributed.zero_stage=2",
                        "--set", "distributed.precision=bf16"))  # fmt: skip
    weights = load_file(out / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())
    trained = weights["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(trained, trained.bfloat16().float())


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


@pytest.mark.parametrize("stage, lora", _matrix(["ppo", "grpo"], {("ppo", False)}))
def test_on_policy_stage_under_zero3_matches_plain_ddp(
    prepared, micro_models, tmp_path, stage, lora
) -> None:
    """Each rank samples its share of the prompts with its own random stream, so two ranks do
    not sample what one process samples; on the same two ranks ZeRO-3 (sharded policy and
    critic, gathered for the rollouts; sharded frozen reference and reward model) must end
    where plain DDP ends. With LoRA the reference is the sharded policy with its adapters
    off."""
    args = [stage, "--prompts", prepared["prompts"], "--sft-model", micro_models["sft"],
            "--reward-model", micro_models["reward"], "--no-track", "--set", "iterations=3",
            "--set", "max_new_tokens=8", "--set", "checkpoint_every=2", *ON_POLICY[stage],
            *(LORA if lora else [])]  # fmt: skip
    run_stage([*args, "--out", str(tmp_path / "ddp")], ranks=2)
    zero3 = run_stage([*args, "--out", str(tmp_path / "zero3"), *ZERO3], ranks=2)
    assert_same_weights(tmp_path / "ddp", tmp_path / "zero3")
    assert "reward model (frozen): sharded across 2 ranks (ZeRO-3)" in zero3.stderr
    if not lora:
        assert "reference (frozen): sharded across 2 ranks (ZeRO-3)" in zero3.stderr


def _pairs_by_rank_and_round(judged: Path, prompts_per_rank: int) -> dict[int, list[int]]:
    """From ``rank_judge``'s log: the best-vs-worst pairs each rank made each round (one per
    prompt whose answers did not all tie)."""
    untied: dict[int, list[int]] = {}
    lines = [tuple(map(int, row.split())) for row in judged.read_text().splitlines()]
    for rank in sorted({r for r, _ in lines}):
        calls = [1 - tied for r, tied in lines if r == rank]
        untied[rank] = [sum(calls[i : i + prompts_per_rank])
                        for i in range(0, len(calls), prompts_per_rank)]  # fmt: skip
    return untied


@pytest.mark.distributed
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_online_dpo_with_uneven_pairs_under_zero3_matches_plain_ddp(
    prepared, micro_models, tmp_path, lora
) -> None:
    """Online DPO on 2 ranks whose rounds give them different numbers of pairs (``rank_judge``:
    2 against 0, then 2 against 1, then 2 and 2; 1 pair per rank per step) runs to the end
    (the rank with fewer pairs steps with the other, weight 0) and, under ZeRO-3, ends where
    plain DDP ends; its history counts both ranks' pairs."""
    from rlhf.stages.online_dpo import HISTORY_FILE

    args = ["online-dpo", "--prompts", prepared["prompts"], "--sft-model", micro_models["sft"],
            "--no-track", "--set", "iterations=3", "--set", "max_new_tokens=8",
            "--set", "checkpoint_every=2", "--set", "prompts_per_iteration=4",
            "--set", "samples_per_prompt=4", "--set", "minibatch_size=2",
            "--set", "judge=rank_judge:rank_ties", *(LORA if lora else [])]  # fmt: skip
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), ENV.get("PYTHONPATH")) if p)
    runs = {}
    for name, extra in (("ddp", []), ("zero3", ZERO3)):
        judged = tmp_path / f"{name}.judged"
        env = {**ENV, "PYTHONPATH": path, "RLHF_TEST_JUDGE_LOG": str(judged)}
        runs[name] = run_stage([*args, "--out", str(tmp_path / name), *extra], ranks=2, env=env)
        assert _pairs_by_rank_and_round(judged, prompts_per_rank=2) == {0: [2, 2, 2],
                                                                         1: [0, 1, 2]}  # fmt: skip
        history = json.loads((tmp_path / name / HISTORY_FILE).read_text())
        assert [h["pairs/count"] for h in history] == [2.0, 3.0, 4.0]  # summed over the ranks
        assert all("loss/dpo" in h for h in history)
    assert_same_weights(tmp_path / "ddp", tmp_path / "zero3")
    if not lora:
        assert "reference (frozen): sharded across 2 ranks (ZeRO-3)" in runs["zero3"].stderr
