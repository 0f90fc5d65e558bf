"""GRPO side by side: the ``rlhf grpo`` stage, TRL's GRPOTrainer and a bare loop. Each
iteration samples ``group`` responses (at most ``new_tokens`` tokens) to each of ``prompts``
prompts, scores them with the demo's gold reward, and takes one pass of minibatch steps of
``batch`` completions under PPO-Clip on the group advantages plus 0.2 x the k3 KL to the
reference. Counted in completions generated and trained on per second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from bare_training import adamw, step
from bench_clocks import IterationClock, window
from bench_inputs import REWARD_FUNCTION, Inputs
from on_policy_parts import KL_COEF, bare_rollout, clipped_surrogate, measured, prompts, run_trl
from on_policy_parts import response_logprobs as logprobs

from rlhf.modeling import models


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from rlhf.config import GRPOConfig
    from rlhf.stages import grpo
    from rlhf.stages.specs import GRPOInputs, ModelOutputs

    s = inputs.settings
    config = GRPOConfig(
        iterations=s.steps, prompts_per_iteration=s.prompts, group_size=s.group,
        minibatch_size=s.batch, grpo_epochs=1, lr=s.lr, warmup_iterations=0,
        max_new_tokens=s.new_tokens, max_prompt_length=s.max_prompt_length, kl_coef=KL_COEF,
        reward_function=REWARD_FUNCTION, seed=s.seed, log_every=1, sample_every=0,
        checkpoint_every=0, log_model_artifacts=False, device="cpu",
    )  # fmt: skip
    clock = IterationClock()
    grpo.run(config, GRPOInputs(inputs.prompts, inputs.model, None),
             ModelOutputs(str(scratch / "model")), clock)  # fmt: skip
    lengths = clock.history("response/length_mean")[1:]
    return measured(inputs, window(clock.times, 1, s.steps), lengths)


def trl(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from trl import GRPOConfig, GRPOTrainer

    return run_trl(inputs, scratch, GRPOTrainer, GRPOConfig)


def bare(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    s = inputs.settings
    tokenizer = models.load_tokenizer(inputs.model)
    policy, reference = models.load_causal_lm(inputs.model), models.load_causal_lm(inputs.model)
    reference.eval().requires_grad_(False)
    optimizer = adamw(policy, s.lr)
    messages, ids = prompts(inputs)
    times, lengths = {}, []
    for it in range(1, s.steps + 1):
        rows = [((it - 1) * s.prompts + i) % len(ids) for i in range(s.prompts)]
        rows = [r for r in rows for _ in range(s.group)]
        policy.eval()
        r = bare_rollout(policy, reference, tokenizer, [messages[i] for i in rows],
                         [ids[i] for i in rows], s.new_tokens)  # fmt: skip
        grouped = r.scores.view(-1, s.group)
        advantages = ((grouped - grouped.mean(1, keepdim=True))
                      / (grouped.std(1, keepdim=True) + 1e-4)).flatten()  # fmt: skip
        policy.train()
        for mb in torch.randperm(len(rows)).split(s.batch):
            new = logprobs(policy, r.ids[mb], r.attention[mb], r.width)
            log_ratio = r.ref[mb] - new
            kl = torch.exp(log_ratio) - log_ratio - 1
            per_token = clipped_surrogate(new, r.old[mb], advantages[mb, None]) + KL_COEF * kl
            mask = r.mask[mb]
            ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean().backward()
            times[it] = step([policy], [optimizer])
        lengths.append(r.mask.sum(-1).mean().item())
    return measured(inputs, window(times, 1, s.steps), lengths[1:])
