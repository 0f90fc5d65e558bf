"""What the GRPO and PPO benchmarks share: the prompts (encoded as the stages encode them),
the programmatic reward all contenders score with (the demo task's gold reward: equally cheap
for all, so the comparison is of generation and training), TRL's on-policy trainers run the
same way, and the bare loops' rollout (sample, then the policy's and the reference's
log-probabilities of the responses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bare_sampling import sample
from bare_training import token_logprobs
from bench_clocks import StepTimes, window
from bench_inputs import Inputs

from rlhf.data.artifacts import load_split
from rlhf.data.demo_task import gold_reward
from rlhf.modeling import models
from rlhf.modeling.encoding import encode_prompt

KL_COEF = 0.2  # the stages' default coefficient of the KL to the reference


def prompts(inputs: Inputs) -> tuple[list[Any], list[list[int]]]:
    tokenizer = models.load_tokenizer(inputs.model)
    messages = [r["prompt"] for r in load_split(inputs.prompts, "train")]
    cut = inputs.settings.max_prompt_length
    return messages, [encode_prompt(tokenizer, m)[-cut:] for m in messages]


def gold(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """The gold reward as a TRL reward function (conversational completions)."""
    return [gold_reward(p, c[0]["content"]) for p, c in zip(prompts, completions, strict=True)]


def measured(inputs: Inputs, seconds: float, lengths: list[float]) -> dict[str, Any]:
    """Completions generated and trained on in the timed iterations (all but the first), and
    the response tokens they held (``lengths``: each timed iteration's mean response length)."""
    s = inputs.settings
    per_iteration = s.prompts * s.group
    return {
        "seconds": seconds, "units": (s.steps - 1) * per_iteration, "unit": "completions",
        "tokens": sum(lengths) * per_iteration, "response_length_mean": sum(lengths) / len(lengths),
    }  # fmt: skip


def run_trl(inputs: Inputs, scratch: Path, trainer_cls: Any, config_cls: Any) -> dict[str, Any]:
    """TRL's GRPOTrainer or RLOOTrainer: ``prompts x group`` completions per generation, cut
    into minibatches of ``batch``, one optimizer step each, one pass (``num_iterations=1``)."""
    from datasets import Dataset
    from trl_settings import trainer_kwargs

    s = inputs.settings
    per_iteration = s.prompts * s.group
    steps_per_iteration = per_iteration // s.batch
    args = config_cls(
        **trainer_kwargs(inputs, scratch, s.steps * steps_per_iteration, s.batch),
        num_generations=s.group, generation_batch_size=per_iteration,
        max_completion_length=s.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=KL_COEF, num_iterations=1, logging_steps=steps_per_iteration,
    )  # fmt: skip
    times = StepTimes()
    messages, _ = prompts(inputs)
    trainer = trainer_cls(model=models.load_causal_lm(inputs.model), reward_funcs=[gold],
                          args=args, train_dataset=Dataset.from_list([{"prompt": m} for m in messages]),
                          processing_class=models.load_tokenizer(inputs.model),
                          callbacks=[times])  # fmt: skip
    trainer.train()
    lengths = [log["completions/mean_length"] for log in times.logs
               if "completions/mean_length" in log][1:]  # fmt: skip
    seconds = window(times.times, steps_per_iteration, s.steps * steps_per_iteration)
    return measured(inputs, seconds, lengths)


@dataclass
class BareRollout:
    ids: torch.Tensor  # (N, P + R)
    attention: torch.Tensor  # (N, P + R)
    mask: torch.Tensor  # (N, R) float, up to and including the first EOS
    width: int  # P
    old: torch.Tensor  # (N, R) the policy's log-probabilities when sampling
    ref: torch.Tensor  # (N, R) the reference's
    scores: torch.Tensor  # (N,)


def response_logprobs(model: Any, ids: torch.Tensor, attention: torch.Tensor,
                      width: int) -> torch.Tensor:  # fmt: skip
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
    return token_logprobs(logits, ids)[:, width - 1 :]


@torch.no_grad()
def bare_rollout(policy: Any, reference: Any, tokenizer: Any, messages: list[Any],
                 ids: list[list[int]], new_tokens: int) -> BareRollout:  # fmt: skip
    full, attention, mask, width = sample(policy, ids, new_tokens, tokenizer.eos_token_id,
                                          tokenizer.pad_token_id)  # fmt: skip
    old = response_logprobs(policy, full, attention, width)
    ref = response_logprobs(reference, full, attention, width)
    texts = [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
             for row, m in zip(full[:, width:], mask, strict=True)]  # fmt: skip
    scores = torch.tensor([gold_reward(p, t) for p, t in zip(messages, texts, strict=True)])
    return BareRollout(full, attention, mask.float(), width, old, ref, scores)


def clipped_surrogate(new: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor,
                      eps: float = 0.2) -> torch.Tensor:  # fmt: skip
    """(N, R) PPO-Clip's per-token loss."""
    ratio = torch.exp(new - old)
    return -torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
