"""SFT side by side: the ``rlhf sft`` stage, TRL's SFTTrainer and a bare loop, each ``steps``
optimizer steps of ``batch`` demonstrations (loss on the answer tokens only) from the same
train split, with length-grouped batches. Counted in rows per second of training; tokens are
rows x the split's mean prompt+answer tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bare_training import adamw, pad_right, step, token_logprobs
from bench_clocks import IterationClock, StepTimes, window
from bench_inputs import Inputs

from rlhf.data.artifacts import load_split
from rlhf.modeling import models
from rlhf.modeling.encoding import encode_conversation
from rlhf.training.batching import length_grouped_batches


def _encoded(inputs: Inputs) -> list[Any]:
    tokenizer = models.load_tokenizer(inputs.model)
    rows = load_split(inputs.sft, "train")
    out = [encode_conversation(tokenizer, r["messages"], inputs.settings.max_length) for r in rows]
    return [e for e in out if sum(e.loss_mask) > 0]


def _measured(inputs: Inputs, seconds: float) -> dict[str, Any]:
    s = inputs.settings
    encoded = _encoded(inputs)
    rows = (s.steps - 1) * s.batch
    mean_tokens = sum(len(e) for e in encoded) / len(encoded)
    return {"seconds": seconds, "units": rows, "unit": "rows", "tokens": rows * mean_tokens}


def ours(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from rlhf.config import SFTConfig
    from rlhf.stages import sft
    from rlhf.stages.specs import ModelOutputs, SFTInputs

    s = inputs.settings
    config = SFTConfig(
        base_model=inputs.model, tokenizer=inputs.model, epochs=1, max_steps=s.steps,
        batch_size=s.batch, lr=s.lr, max_length=s.max_length, seed=s.seed, log_every=1,
        eval_every=0, checkpoint_every=0, log_model_artifacts=False, device="cpu",
    )  # fmt: skip
    clock = IterationClock()
    sft.run(config, SFTInputs(inputs.sft), ModelOutputs(str(scratch / "model")), clock)
    return _measured(inputs, window(clock.times, 1, s.steps))


def trl(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    from trl_settings import trainer_kwargs

    s = inputs.settings
    rows = [
        {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
        for r in load_split(inputs.sft, "train")
    ]
    args = SFTConfig(
        **trainer_kwargs(inputs, scratch, s.steps, s.batch), max_length=s.max_length,
        lr_scheduler_type="cosine", warmup_steps=0.05, train_sampling_strategy="group_by_length",
    )  # fmt: skip
    times = StepTimes()
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(inputs.model), args=args,
        train_dataset=Dataset.from_list(rows), processing_class=models.load_tokenizer(inputs.model),
        callbacks=[times],
    )  # fmt: skip
    trainer.train()
    return _measured(inputs, window(times.times, 1, s.steps))


def bare(inputs: Inputs, scratch: Path) -> dict[str, Any]:
    s = inputs.settings
    pad = models.load_tokenizer(inputs.model).pad_token_id
    encoded = _encoded(inputs)
    order = length_grouped_batches([len(e) for e in encoded], s.batch, s.seed, 0)[: s.steps]
    batches = []
    for group in order:
        ids = pad_right([encoded[i].input_ids for i in group], pad)
        attention = pad_right([[1] * len(encoded[i]) for i in group], 0)
        loss_mask = pad_right([encoded[i].loss_mask for i in group], 0)[:, 1:].float()
        batches.append((ids, attention, loss_mask))
    model = models.load_causal_lm(inputs.model)
    model.train()
    optimizer = adamw(model, s.lr)
    times = {}
    for k, (ids, attention, loss_mask) in enumerate(batches, start=1):
        logp = token_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids)
        loss = -(logp * loss_mask).sum() / loss_mask.sum()
        loss.backward()
        times[k] = step([model], [optimizer])
    return _measured(inputs, window(times, 1, s.steps))


__all__ = ["bare", "ours", "trl"]
