"""The inputs every contender of the side-by-side benchmarks (``side_by_side.py``) reads, made
once per run under one folder, nothing downloaded: the demo task's data through the prepare
stage, a byte-level BPE tokenizer trained on its SFT text (the demo's vocabulary size), and
a randomly initialised Llama of the ``bench`` shape (4 layers, 256 wide) saved as the starting
"SFT model". Also the settings all contenders share."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from llama_shapes import build_llama, llama_config

from rlhf.config import DemoConfig, PrepareConfig, SFTConfig
from rlhf.data.artifacts import load_split
from rlhf.data.demo_task import write_demo_files
from rlhf.modeling import models
from rlhf.modeling.tokenizer import train_bpe_tokenizer
from rlhf.stages import prepare
from rlhf.stages.specs import PrepareInputs, PrepareOutputs

ARTIFACTS = ("sft", "preferences", "prompts", "eval_prompts")
REWARD_FUNCTION = "rlhf.data.demo_task:gold_reward"  # the RL runs' programmatic reward


@dataclass
class Settings:
    """What every contender of a kind of work gets the same of."""

    steps: int = 6  # optimizer steps (supervised) or iterations (RL); the first is warm-up
    batch: int = 8  # rows (SFT), pairs (reward, DPO) or completions (RL) per optimizer step
    prompts: int = 4  # RL: prompts per iteration ...
    group: int = 4  # ... times completions per prompt = completions per iteration
    new_tokens: int = 32  # RL and generation: responses are this long at most
    gen_batch: int = 16  # generation: prompts per batch
    gen_rounds: int = 2  # generation: batches timed (after one warm-up batch)
    max_length: int = 256  # tokens per training sequence (no demo row is longer)
    max_prompt_length: int = 192
    lr: float = 1e-4
    size: str = "bench"  # the model's shape in llama_shapes.SIZES ("micro" for the smoke test)
    threads: int = 1  # torch threads per contender (see docs/benchmarks.md on why 1)
    seed: int = 0
    # "wall" (elapsed) or "cpu" (each contender's own CPU seconds: bench_time.py says why)
    clock: str = "wall"


@dataclass
class Inputs:
    """Paths of the prepared artifacts and of the starting model (with its tokenizer)."""

    root: str
    sft: str
    preferences: str
    prompts: str
    model: str
    settings: Settings

    def save(self) -> None:
        (Path(self.root) / "inputs.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, root: str | Path) -> Inputs:
        data = json.loads((Path(root) / "inputs.json").read_text())
        return cls(**{**data, "settings": Settings(**data["settings"])})


def make_inputs(root: Path, settings: Settings) -> Inputs:
    """Prepare the demo data (enough rows for ``settings.steps`` full batches of training) and
    save the starting model under ``root``."""
    rows = settings.steps * settings.batch
    # Prepare holds 10% out for validation and drops duplicates; 1.3x leaves enough train rows.
    demo = DemoConfig(
        sft_rows=int(rows * 1.3) + 16, preference_rows=int(rows * 1.3) + 16,
        prompt_rows=max(64, settings.steps * settings.prompts * 2), eval_prompt_rows=8,
    )  # fmt: skip
    files = write_demo_files(root / "demo", demo)
    prepared = {name: str(root / "prepared" / name) for name in ARTIFACTS}
    prepare.run(
        PrepareConfig(seed=settings.seed),
        PrepareInputs(**{name: [str(files[name])] for name in ARTIFACTS}, unpaired=[]),
        PrepareOutputs.in_folder(root / "prepared"),
    )
    for name in ("sft", "preferences"):
        have = len(load_split(prepared[name], "train"))
        if have < rows:
            raise RuntimeError(f"{prepared[name]}: {have} train rows, need {rows}")
    texts = (m["content"] for r in load_split(prepared["sft"], "train") for m in r["messages"])
    tokenizer = train_bpe_tokenizer(texts, vocab_size=SFTConfig().vocab_size)
    config = llama_config(settings.size, settings.max_length + settings.new_tokens, len(tokenizer))
    config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    model_dir = str(root / "model")
    models.save_pretrained(build_llama(config, settings.seed), tokenizer, model_dir)
    inputs = Inputs(str(root), prepared["sft"], prepared["preferences"], prepared["prompts"],
                    model_dir, settings)  # fmt: skip
    inputs.save()
    return inputs
