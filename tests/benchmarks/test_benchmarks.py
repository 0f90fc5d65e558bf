"""The benchmarks keep running: the GPU script end to end on a CPU with a micro model (its
JSON holds positive numbers), and the byte counting of the ZeRO memory benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))  # the benchmarks are scripts, not a package

from held_bytes import held_bytes  # noqa: E402
from ppo_episodes import IterationClock  # noqa: E402


def test_held_bytes_counts_each_storage_once_in_its_first_category():
    model = torch.nn.Linear(3, 2)  # 6 + 2 fp32 weights: 32 bytes
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    before_step = held_bytes(model, optimizer)
    assert (before_step.weights, before_step.gradients, before_step.optimizer) == (32, 32, 0)
    optimizer.step()
    # exp_avg and exp_avg_sq like the weights (32 + 32), one fp32 step count per tensor (8).
    assert held_bytes(model, optimizer).optimizer == 72
    assert held_bytes(model, optimizer).model_states == 32 + 32 + 72

    # An optimizer stepping a view of the model's weights (ZeRO-3's fp32 partition when the
    # weights are fp32 already) holds no second copy; one with its own copy holds one.
    flat = torch.zeros(8)
    model.weight.data, model.bias.data = flat[:6].view(2, 3), flat[6:]
    shares = torch.optim.SGD([flat[:4]])
    copies = torch.optim.SGD([flat[:4].clone()])
    assert held_bytes(model, shares).optimizer == 0
    assert held_bytes(model, copies).optimizer == 16


def test_iteration_clock_keeps_when_a_step_first_logged():
    """The supervised loop logs its final validation under the last step's number after that
    step's own metrics: the step ends at the first, so the timed window leaves validation out."""
    clock = IterationClock()
    clock.log_metrics({"train/loss": 1.0}, step=3)
    first = clock.times[3]
    clock.log_metrics({"val/loss": 1.0}, step=3)
    clock.log_metrics({"final/loss": 1.0})  # no step: not a step's end
    assert clock.times == {3: first}


@pytest.mark.benchmarks  # a benchmark smoke run: make test-benchmarks
def test_gpu_throughput_runs_on_cpu(tmp_path):
    cmd = [
        sys.executable, str(BENCHMARKS / "gpu_throughput.py"), "--out", str(tmp_path),
        "--device", "cpu", "--size", "micro", "--batch", "2", "--length", "32", "--warmup", "1",
        "--steps", "2", "--peak-tflops", "1", "--ppo-rollout-batch", "8", "--ppo-minibatch", "4",
        "--ppo-new-tokens", "8", "--ppo-iterations", "1", "--gen-batch", "4", "--gen-prompt", "8",
        "--gen-new-tokens", "8", "--gen-rollouts", "2",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    report = json.loads((tmp_path / "gpu_throughput.json").read_text())
    assert report["date"] and report["device"].startswith("CPU")
    sft, ppo = report["sft"], report["ppo"]
    for value in (sft["tokens_per_second"], sft["mfu"], sft["flops_per_token"],
                  ppo["episodes_per_second"], ppo["seconds_per_iteration"]):  # fmt: skip
        assert value > 0
    assert ppo["rollout_batch_size"] == 8 and ppo["timed_iterations"] == 1
    # The iteration's split, from the stage's timing metrics: sampling, scoring, update.
    split = ppo["sampling_seconds"] + ppo["scoring_seconds"] + ppo["update_seconds"]
    assert ppo["sampling_seconds"] > 0 and ppo["update_seconds"] > 0 and ppo["scoring_seconds"] >= 0
    assert split <= ppo["seconds_per_iteration"] * 1.01  # the rest: guards, logs
    assert report["matmul_tflops"] is None  # a GPU's alone
    # No vLLM here: model.generate (the baseline) and the torch decode loop.
    assert [g["backend"] for g in report["generation"]] == [
        "generate", "torch", "torch-engine", "torch-copy",
    ]  # fmt: skip
    for generation in report["generation"]:
        assert len(generation["rollout_seconds"]) == 2 and generation["tokens_per_second"] > 0
    assert "generation tokens/s (torch)" in done.stdout and "x model.generate)" in done.stdout
    assert "SFT tokens/s" in done.stdout and "PPO episodes/s" in done.stdout


@pytest.mark.benchmarks  # a benchmark smoke run: make test-benchmarks
def test_the_gpu_checks_script_runs_every_step_on_cpu(tmp_path):
    """benchmarks/gpu_checks.sh, the one run a GPU machine gets, at its CPU settings: every
    stage from the demo data on, ZeRO-2 and -3 (DeepSpeed is in the dev install), then the
    throughput script; each step's status in the summary."""
    env = {**os.environ, "GPU_CHECKS_SIZE": "micro", "GPU_CHECKS_PRECISION": "fp32",
           "PYTHON": sys.executable}  # fmt: skip
    script = BENCHMARKS / "gpu_checks.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path)], cwd=BENCHMARKS.parent, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    summary = (tmp_path / "summary.txt").read_text()
    assert done.returncode == 0, summary + done.stdout[-4000:]
    steps = {line.split()[0]: line.split()[1] for line in summary.splitlines()}
    assert list(steps) == ["versions", "throughput", "demo-data", "prepare", "sft", "reward",
                           "dpo", "ppo", "grpo", "sft-zero2", "sft-zero3"]  # fmt: skip
    assert set(steps.values()) == {"rc=0"}
    for model in ("sft", "reward", "dpo", "ppo", "grpo", "sft-zero3"):
        assert (tmp_path / "stages" / model / "manifest.json").exists(), model
    assert "torch 2." in (tmp_path / "versions.log").read_text()
    assert (tmp_path / "throughput" / "gpu_throughput.json").exists()


@pytest.mark.benchmarks  # a benchmark smoke run: make test-benchmarks
def test_prepare_scaling_runs_on_a_tiny_input(tmp_path):
    cmd = [
        sys.executable, str(BENCHMARKS / "prepare_scaling.py"), "--sizes", "60",
        "--kinds", "preferences", "prompts", "--out", str(tmp_path), "--work", str(tmp_path / "w"),
        "--baseline", str(BENCHMARKS.parent / "src"),  # the same code as a second column
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    (result,) = json.loads((tmp_path / "prepare_scaling.json").read_text())["results"]
    assert result["rows"] == 60 and result["seconds"] > 0 and result["peak_rss_mb"] > 0
    # One row in 50 repeats the one before; pairs of rows share a prompt.
    assert result["metrics"]["preferences/duplicates_dropped"] == 1
    assert (
        result["metrics"]["prompts/train_rows"] + result["metrics"]["prompts/validation_rows"] == 60
    )
    assert result["baseline"]["metrics"] == result["metrics"]
    assert result["baseline"]["seconds"] > 0 and "| time ratio |" in done.stdout
    assert not list((tmp_path / "w").iterdir())  # inputs and outputs removed


@pytest.mark.benchmarks  # a benchmark smoke run: make test-benchmarks
def test_autocast_casts_counts_the_casts_of_both_ways_of_sampling():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "autocast_casts.py")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-6000:]
    assert "casts, bf16 weights:" in done.stdout and "of a weight's shape:" in done.stdout


@pytest.mark.benchmarks  # a benchmark smoke run: make test-benchmarks
def test_rollout_weights_times_the_policy_against_its_copy(tmp_path):
    out = tmp_path / "rollout_weights.json"
    cmd = [sys.executable, str(BENCHMARKS / "rollout_weights.py"), "--size", "micro", "--batch",
           "2", "--prompt", "8", "--new-tokens", "8", "--rounds", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    report = json.loads(out.read_text())
    assert [case["case"] for case in report["cases"]] == ["bf16", "lora"]
    for case in report["cases"]:
        assert len(case["policy_over_copy"]) == 2 and min(case["policy_over_copy"]) > 0
    assert "copy" in done.stdout and "x as fast" in done.stdout
