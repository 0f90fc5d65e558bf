"""DPO side by side: the ``rlhf dpo`` stage, TRL's DPOTrainer and a bare loop; each ``steps``
optimizer steps of ``batch`` pairs under the sigmoid DPO loss (beta 0.3). All three compute
the frozen reference's log-probabilities before training (the stage caches them per data set;
TRL with ``precompute_ref_log_probs``), outside the timed part. Counted in pairs per second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from bare_training import adamw, step, token_logprobs
from bench_clocks import IterationClock, StepTimes, window
from bench_inputs import Inputs
from preference_batches import bare_batches, measured

from rlhf.data.artifacts import load_split
from rlhf.modeling import models
from rlhf.modeling.encoding import encode_prompt_answer
from rlhf.modeling.reward_scoring import as_messages

BETA = 0.3  # the stage's default


def _encode(tokenizer: Any, row: dict[str, Any], answer: str, max_length: int) -> Any:
    return encode_prompt_answer(tokenizer, as_messages(row["prompt"]), answer, max_length)


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from rlhf.config import DPOConfig
    from rlhf.stages import dpo
    from rlhf.stages.specs import DPOInputs, ModelOutputs

    s = inputs.settings
    config = DPOConfig(
        epochs=1, max_steps=s.steps, batch_size=s.batch, lr=s.lr, beta=BETA,
        max_length=s.max_length, seed=s.seed, log_every=1, eval_every=0, checkpoint_every=0,
        log_model_artifacts=False, device="cpu",
    )  # fmt: skip
    clock = IterationClock()
    dpo.run(config, DPOInputs(inputs.preferences, inputs.model),
            ModelOutputs(str(scratch / "model")), clock)  # fmt: skip
    return measured(inputs, _encode, window(clock.times, 1, s.steps))


def trl(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl_settings import conversational_pairs, trainer_kwargs

    s = inputs.settings
    args = DPOConfig(**trainer_kwargs(inputs, scratch, s.steps, s.batch), beta=BETA,
                     max_length=s.max_length, precompute_ref_log_probs=True,
                     lr_scheduler_type="cosine", warmup_steps=0.1)  # fmt: skip
    times = StepTimes()
    rows = conversational_pairs(list(load_split(inputs.preferences, "train")))
    trainer = DPOTrainer(model=models.load_causal_lm(inputs.model), args=args,
                         train_dataset=Dataset.from_list(rows),
                         processing_class=models.load_tokenizer(inputs.model),
                         callbacks=[times])  # fmt: skip
    trainer.train()
    return measured(inputs, _encode, window(times.times, 1, s.steps))


def _answer_logprob_sums(model: Any, ids: torch.Tensor, attention: torch.Tensor,
                         answer: torch.Tensor) -> torch.Tensor:  # fmt: skip
    logp = token_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids)
    return (logp * answer[:, 1:]).sum(-1)


def bare(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    s = inputs.settings
    batches = bare_batches(inputs, _encode)
    reference = models.load_causal_lm(inputs.model).eval()
    with torch.no_grad():
        ref = [_answer_logprob_sums(reference, *b) for b in batches]
    del reference
    model = models.load_causal_lm(inputs.model)
    model.train()
    optimizer = adamw(model, s.lr)
    times = {}
    for k, (batch, ref_sums) in enumerate(zip(batches, ref, strict=True), start=1):
        ratios = _answer_logprob_sums(model, *batch) - ref_sums
        chosen, rejected = ratios.chunk(2)
        torch.nn.functional.logsigmoid(BETA * (chosen - rejected)).mean().neg().backward()
        times[k] = step([model], [optimizer])
    return measured(inputs, _encode, window(times, 1, s.steps))
