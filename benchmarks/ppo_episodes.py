"""PPO episodes per second through the project's own PPO stage (``rlhf.stages.ppo.run``, what
``rlhf ppo`` runs): each iteration generates one response per prompt with the policy, scores
it with the frozen reward model and the reference's KL, computes GAE with the critic and
takes ``ppo_epochs`` passes of minibatch updates of policy and critic.

The inputs are made here, nothing downloaded: the demo task's data (``rlhf.data.demo_task``)
through the prepare stage, a byte-level BPE tokenizer trained on its SFT text (as the SFT
stage trains one for a preset), a randomly initialised Llama of the benchmark's size saved as
the "SFT model", and a scalar reward model made from it by the reward stage in one step. The
vocabulary is the demo tokenizer's (a few thousand tokens), so the output head is smaller than
a real 32k one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench_time import now
from llama_shapes import build_llama, llama_config, parameter_count

from rlhf.config import DemoConfig, DistributedConfig, PPOConfig, PrepareConfig, RewardConfig
from rlhf.data.artifacts import load_split
from rlhf.data.demo_task import write_demo_files
from rlhf.modeling import models
from rlhf.modeling.tokenizer import train_bpe_tokenizer
from rlhf.stages import ppo, prepare, reward
from rlhf.stages.specs import ModelOutputs, PrepareInputs, PrepareOutputs, RewardInputs
from rlhf.tracking import Tracker

ARTIFACTS = ("sft", "preferences", "prompts", "eval_prompts")  # the demo files


class IterationClock(Tracker):
    """An in-memory tracker that also notes when each iteration's metrics first arrive (after
    the iteration's last update: its stats are read back from the device first). The first:
    the supervised loop (SFT, reward, DPO) logs its final validation under the last step's
    number after that step's own metrics, and a timed window must not hold that pass."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[int, float] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if step is not None:
            self.times.setdefault(step, now())


def make_inputs(
    work: Path, size: str, prompts: int, max_length: int, device: str
) -> tuple[ppo.PPOInputs, dict[str, Any]]:
    """The prepared prompts, the random "SFT" policy and its reward model, under ``work``."""
    demo = DemoConfig(sft_rows=2000, preference_rows=64, prompt_rows=prompts, eval_prompt_rows=8)
    files = write_demo_files(work / "demo", demo)
    prepared = {name: str(work / "prepared" / name) for name in ARTIFACTS}
    prepare.run(
        PrepareConfig(),
        PrepareInputs(**{name: [str(files[name])] for name in ARTIFACTS}, unpaired=[]),
        PrepareOutputs.in_folder(work / "prepared"),
    )
    texts = (m["content"] for r in load_split(prepared["sft"], "train") for m in r["messages"])
    tokenizer = train_bpe_tokenizer(texts, vocab_size=32000)
    config = llama_config(size, max_length, vocab_size=len(tokenizer))
    config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    policy = build_llama(config)
    sft_model = str(work / "sft_model")
    models.save_pretrained(policy, tokenizer, sft_model)
    reward_model = str(work / "reward_model")
    reward.run(
        RewardConfig(
            head="scalar", pooling="last", epochs=0, max_steps=1, batch_size=8, eval_every=0,
            checkpoint_every=0, log_model_artifacts=False, device=device,
        ),
        RewardInputs(prepared["preferences"], sft_model),
        ModelOutputs(reward_model),
    )  # fmt: skip
    model = {"parameters": parameter_count(policy), "vocab_size": len(tokenizer)}
    return ppo.PPOInputs(prepared["prompts"], sft_model, reward_model), model


def measure(
    work: Path,
    size: str,
    rollout_batch: int,
    minibatch: int,
    max_new_tokens: int,
    warmup: int,
    iterations: int,
    precision: str,
    device: str,
) -> dict[str, Any]:
    """Episodes (prompt, sampled response, score) per second over ``iterations`` PPO
    iterations after ``warmup`` ones."""
    config = PPOConfig(
        iterations=warmup + iterations, rollout_batch_size=rollout_batch,
        minibatch_size=minibatch, max_new_tokens=max_new_tokens, warmup_iterations=0,
        log_every=1, sample_every=0, checkpoint_every=0, log_model_artifacts=False,
        device=device, distributed=DistributedConfig(precision=precision),
    )  # fmt: skip
    inputs, model = make_inputs(
        work, size, 2 * rollout_batch, config.max_prompt_length + max_new_tokens, device
    )
    clock = IterationClock()
    ppo.run(config, inputs, ModelOutputs(str(work / "ppo_policy")), clock)
    seconds = clock.times[warmup + iterations] - clock.times[warmup]

    def per_iteration(key: str) -> float:  # the loop's timing metrics, timed iterations only
        return sum(clock.history(key)[warmup:]) / iterations

    return {
        **model,
        "rollout_batch_size": rollout_batch,
        "minibatch_size": minibatch,
        "ppo_epochs": config.ppo_epochs,
        "max_new_tokens": max_new_tokens,
        "precision": precision,
        "warmup_iterations": warmup,
        "timed_iterations": iterations,
        "response_length_mean": clock.history("response/length_mean")[-1],
        "seconds_per_iteration": seconds / iterations,
        "episodes_per_second": rollout_batch * iterations / seconds,
        # Where an iteration's time goes: sampling the responses, the rest of the rollout
        # (reward, reference and value passes), the minibatch updates.
        "sampling_seconds": per_iteration("time/sampling_seconds"),
        "scoring_seconds": per_iteration("time/rollout_seconds")
        - per_iteration("time/sampling_seconds"),
        "update_seconds": per_iteration("time/update_seconds"),
    }
