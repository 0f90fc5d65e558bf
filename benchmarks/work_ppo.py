"""PPO side by side: the ``rlhf ppo`` stage (policy and critic, GAE, PPO-Clip), TRL's
RLOOTrainer (the closest on-policy trainer TRL still has: it removed PPOTrainer; no critic,
so it does less work per completion) and a bare PPO loop. Each iteration samples
``prompts x group`` responses (at most ``new_tokens`` tokens; the stage samples one response
to each of that many prompts), scores them with the demo's gold reward, and takes one pass of
minibatch steps of ``batch`` completions. Counted in completions generated and trained on per
second."""

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

GAMMA, LAM, VF_COEF, VALUE_CLIP = 1.0, 0.95, 0.5, 0.2  # the stage's defaults


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from rlhf.config import PPOConfig
    from rlhf.stages import ppo
    from rlhf.stages.specs import ModelOutputs, PPOInputs

    s = inputs.settings
    config = PPOConfig(
        iterations=s.steps, rollout_batch_size=s.prompts * s.group, minibatch_size=s.batch,
        ppo_epochs=1, lr=s.lr, warmup_iterations=0, max_new_tokens=s.new_tokens,
        max_prompt_length=s.max_prompt_length, kl_coef=KL_COEF, critic_init="policy",
        reward_function=REWARD_FUNCTION, seed=s.seed, log_every=1, sample_every=0,
        checkpoint_every=0, log_model_artifacts=False, device="cpu",
    )  # fmt: skip
    clock = IterationClock()
    ppo.run(config, PPOInputs(inputs.prompts, inputs.model, inputs.model),
            ModelOutputs(str(scratch / "model")), clock)  # fmt: skip
    lengths = clock.history("response/length_mean")[1:]
    return measured(inputs, window(clock.times, 1, s.steps), lengths)


def trl(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from trl import RLOOConfig, RLOOTrainer

    return run_trl(inputs, scratch, RLOOTrainer, RLOOConfig)


def _values(critic: Any, ids: torch.Tensor, attention: torch.Tensor, width: int) -> torch.Tensor:
    """(N, R) the critic's value of the state before each response token."""
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    hidden = critic.model(input_ids=ids, attention_mask=attention, position_ids=positions,
                          use_cache=False).last_hidden_state  # fmt: skip
    return critic.score(hidden).squeeze(-1)[:, width - 1 : -1]


def _gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    advantages, last = torch.zeros_like(rewards), torch.zeros(len(rewards))
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros(len(rewards))
        delta = rewards[:, t] + GAMMA * following * mask[:, t] - values[:, t]
        last = (delta + GAMMA * LAM * last) * mask[:, t]
        advantages[:, t] = last
    return advantages


def bare(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    s = inputs.settings
    tokenizer = models.load_tokenizer(inputs.model)
    policy, reference = models.load_causal_lm(inputs.model), models.load_causal_lm(inputs.model)
    reference.eval().requires_grad_(False)
    critic = models.load_reward_model(inputs.model)
    optimizers = [adamw(policy, s.lr), adamw(critic, s.lr)]
    messages, ids = prompts(inputs)
    times, lengths = {}, []
    n = s.prompts * s.group
    for it in range(1, s.steps + 1):
        rows = [((it - 1) * n + i) % len(ids) for i in range(n)]
        policy.eval()
        r = bare_rollout(policy, reference, tokenizer, [messages[i] for i in rows],
                         [ids[i] for i in rows], s.new_tokens)  # fmt: skip
        with torch.no_grad():
            values = _values(critic, r.ids, r.attention, r.width)
            rewards = -KL_COEF * (r.old - r.ref) * r.mask
            last = (r.mask.sum(-1).long() - 1).clamp(min=0)
            rewards[torch.arange(n), last] += r.scores
            advantages = _gae(rewards, values, r.mask)
            returns = advantages + values
            mean = (advantages * r.mask).sum() / r.mask.sum()
            var = (((advantages - mean) ** 2) * r.mask).sum() / r.mask.sum()
            advantages = (advantages - mean) / (var.sqrt() + 1e-8)
        policy.train()
        for mb in torch.randperm(n).split(s.batch):
            mask = r.mask[mb]
            new = logprobs(policy, r.ids[mb], r.attention[mb], r.width)
            policy_loss = (clipped_surrogate(new, r.old[mb], advantages[mb]) * mask).sum()
            v = _values(critic, r.ids[mb], r.attention[mb], r.width)
            clipped = values[mb] + (v - values[mb]).clamp(-VALUE_CLIP, VALUE_CLIP)
            value_loss = torch.max((v - returns[mb]) ** 2, (clipped - returns[mb]) ** 2)
            value_loss = 0.5 * (value_loss * mask).sum()
            ((policy_loss + VF_COEF * value_loss) / mask.sum()).backward()
            times[it] = step([policy, critic], optimizers)
        lengths.append(r.mask.sum(-1).mean().item())
    return measured(inputs, window(times, 1, s.steps), lengths[1:])
