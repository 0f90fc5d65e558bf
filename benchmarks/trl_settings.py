"""The settings every TRL trainer of the side-by-side benchmarks gets, so that it does the
same job as the project's stage: CPU, fp32, no evaluation, no saving, no reporting, the same
seed, batch and learning rate. Imported only by the benchmarks: the package never imports trl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_inputs import Inputs


def trainer_kwargs(inputs: Inputs, scratch: Path, max_steps: int, batch: int) -> dict[str, Any]:
    s = inputs.settings
    return dict(
        output_dir=str(scratch / "trl"), max_steps=max_steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, learning_rate=s.lr, weight_decay=0.01, max_grad_norm=1.0,
        seed=s.seed, data_seed=s.seed, use_cpu=True, bf16=False, fp16=False,
        eval_strategy="no", save_strategy="no", report_to=[], dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip


def conversational_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Preference rows as TRL's conversational preference format."""
    from rlhf.modeling.reward_scoring import as_messages

    return [
        {
            "prompt": as_messages(r["prompt"]),
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in rows
    ]
