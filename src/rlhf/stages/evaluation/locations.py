"""Where the evaluation stage reads its models and data and writes its report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalInputs:
    eval_prompts: str  # prepared eval_prompts artifact (its "test" split)
    candidate: str  # the policy to evaluate (e.g. the PPO model folder)
    reference: str  # the policy to compare with (the SFT model)
    reward_model: str | None  # the reward model that judges both; None skips RM metrics
    sft_data: str | None = None  # prepared sft artifact: perplexity on its validation split
    # Extra policy folders ranked by Elo alongside candidate and reference; each is named by
    # its folder's name (made unique, and never "candidate" or "reference").
    others: list[str] = field(default_factory=list)


@dataclass
class EvalOutputs:
    report: str  # HTML file (give it a folder of its own: the folder goes to the tracker)
    metrics: str | None = None  # JSON file of the flat metrics
