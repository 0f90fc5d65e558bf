"""The reward model side by side: the ``rlhf reward`` stage with a scalar head read at the
last token (``head: scalar, pooling: last``: what TRL's RewardTrainer trains), TRL's
RewardTrainer and a bare loop; each ``steps`` optimizer steps of ``batch`` pairs under the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). Counted in pairs per second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from bare_training import adamw, step
from bench_clocks import IterationClock, StepTimes, window
from bench_inputs import Inputs
from preference_batches import bare_batches, measured

from rlhf.data.artifacts import load_split
from rlhf.modeling import models
from rlhf.modeling.reward_scoring import encode_for_reward


def _encode(tokenizer: Any, row: dict[str, Any], answer: str, max_length: int) -> Any:
    return encode_for_reward(tokenizer, row["prompt"], answer, max_length)


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from rlhf.config import RewardConfig
    from rlhf.stages import reward
    from rlhf.stages.specs import ModelOutputs, RewardInputs

    s = inputs.settings
    config = RewardConfig(
        head="scalar", pooling="last", use_margin=False, epochs=1, max_steps=s.steps,
        batch_size=s.batch, lr=s.lr, max_length=s.max_length, seed=s.seed, log_every=1,
        eval_every=0, checkpoint_every=0, log_model_artifacts=False, device="cpu",
    )  # fmt: skip
    clock = IterationClock()
    reward.run(config, RewardInputs(inputs.preferences, inputs.model),
               ModelOutputs(str(scratch / "model")), clock)  # fmt: skip
    return measured(inputs, _encode, window(clock.times, 1, s.steps))


def trl(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer
    from trl_settings import conversational_pairs, trainer_kwargs

    s = inputs.settings
    tokenizer = models.load_tokenizer(inputs.model)
    model = models.load_reward_model(inputs.model)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(**trainer_kwargs(inputs, scratch, s.steps, s.batch),
                        max_length=s.max_length, lr_scheduler_type="cosine",
                        warmup_steps=0.1)  # fmt: skip
    times = StepTimes()
    rows = conversational_pairs(list(load_split(inputs.preferences, "train")))
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, callbacks=[times])  # fmt: skip
    trainer.train()
    return measured(inputs, _encode, window(times.times, 1, s.steps))


def bare(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    s = inputs.settings
    batches = bare_batches(inputs, _encode)
    model = models.load_reward_model(inputs.model)
    model.config.pad_token_id = models.load_tokenizer(inputs.model).pad_token_id
    model.train()
    optimizer = adamw(model, s.lr)
    times = {}
    for k, (ids, attention, _) in enumerate(batches, start=1):
        scores = model(input_ids=ids, attention_mask=attention).logits.squeeze(-1)
        chosen, rejected = scores.chunk(2)
        torch.nn.functional.logsigmoid(chosen - rejected).mean().neg().backward()
        times[k] = step([model], [optimizer])
    return measured(inputs, _encode, window(times, 1, s.steps))
