"""The champion gate: only a policy that beats the current champion takes its place.

Scheduled retraining must never replace a better model with a worse one. The evaluation stage
samples the registered ``champion`` alongside the candidate on the same held-out prompts (same
seed, same number of samples), a judge scores both, and ``decide`` turns the paired win rate
into an alias: ``champion`` for a winner (and for the very first model), ``challenger``
otherwise. ``register_outcome`` then registers the policy and its reward model under that
alias.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rlhf.config import GATE_JUDGES
from rlhf.modeling import mlflow_models
from rlhf.registry import CHALLENGER, CHAMPION, ModelRegistry, Version, layout

log = logging.getLogger("rlhf.gate")


@dataclass(frozen=True)
class GateDecision:
    alias: str  # CHAMPION or CHALLENGER
    reason: str
    win_rate: float | None  # candidate over champion (ties 1/2); None: there was no champion
    samples: int  # paired samples the win rate is over
    threshold: float
    min_samples: int
    judge: str

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    def metrics(self) -> dict[str, float]:
        out = {
            "gate/promoted": float(self.promoted),
            "gate/samples": float(self.samples),
            "gate/threshold": self.threshold,
            "gate/min_samples": float(self.min_samples),
        }
        if self.win_rate is not None:
            out["gate/win_rate"] = self.win_rate
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "promoted": self.promoted}


@dataclass(frozen=True)
class ServingSettings:
    """How the registered models run when loaded or served: the evaluation's settings."""

    generation: Mapping[str, Any]  # the policy's generate() keywords
    chat_template: bool  # prompts rendered with the tokenizer's chat template
    scoring: Mapping[str, Any]  # the reward model's device, dtype and batch_size


def decide(
    win_rate: float | None, samples: int, threshold: float, min_samples: int, judge: str
) -> GateDecision:
    """The alias for a candidate with ``win_rate`` over the champion on ``samples`` pairs
    (``win_rate`` None: no champion yet). It must win strictly more than ``threshold`` on at
    least ``min_samples`` pairs; a tie at the threshold keeps the incumbent."""
    if win_rate is None:
        alias, reason = CHAMPION, "no champion yet: the first model becomes champion"
    elif samples < min_samples:
        alias = CHALLENGER
        reason = (
            f"only {samples} paired samples (< gate_min_samples {min_samples}): too little "
            "evidence to replace the champion"
        )
    elif win_rate > threshold:
        alias, reason = CHAMPION, f"win rate {win_rate:.3f} over the champion > {threshold}"
    else:
        alias, reason = CHALLENGER, f"win rate {win_rate:.3f} over the champion <= {threshold}"
    return GateDecision(alias, reason, win_rate, samples, threshold, min_samples, judge)


def judge_for(setting: str, has_gold: bool, has_reward_model: bool = True) -> str:
    """``gate_judge`` resolved to "gold" or "reward_model"."""
    if setting not in GATE_JUDGES:
        raise ValueError(f"gate_judge must be one of {GATE_JUDGES}, got {setting!r}")
    if setting == "auto":
        setting = "gold" if has_gold else "reward_model"
    if setting == "gold" and not has_gold:
        raise ValueError("gate_judge is 'gold' but no gold_reward is configured")
    if setting == "reward_model" and not has_reward_model:
        raise ValueError(
            "the champion gate needs a judge: no reward model and no gold_reward "
            "(set gold_reward, or registered_policy: '' to skip the gate)"
        )
    return setting


def judged(
    rm_scores: Sequence[float] | None, gold_scores: Sequence[float] | None, judge: str
) -> list[float]:
    """The scores the judge gives one model's samples."""
    scores = gold_scores if judge == "gold" else rm_scores
    assert scores is not None, f"no {judge} scores"
    return list(scores)


def register_outcome(
    registry: ModelRegistry,
    decision: GateDecision,
    policy_name: str,
    reward_model_name: str,
    candidate: str,
    reward_model: str | None,
    run_id: str,
    tags: Mapping[str, Any],
    serving: ServingSettings,
) -> dict[str, Version]:
    """Register the candidate policy (and its reward model, when there is one and
    ``reward_model_name`` is set) with ``tags`` and give both the decision's alias; each is an
    MLflow model logged into ``run_id`` that loads and serves as ``serving`` says (the
    evaluation's own settings). Returns the new versions by role."""
    gate_tags = {
        "rlhf.gate.alias": decision.alias,
        "rlhf.gate.reason": decision.reason,
        "rlhf.gate.judge": decision.judge,
        "rlhf.gate.samples": decision.samples,
        "rlhf.gate.win_rate": "" if decision.win_rate is None else f"{decision.win_rate:.6f}",
    }
    versions = {
        "policy": registry.register_model(
            policy_name,
            candidate,
            run_id,
            layout.POLICY_ARTIFACT_PATH,
            {**tags, **gate_tags},
            lambda local, dest: mlflow_models.save_policy(
                local, dest, serving.generation, serving.chat_template, candidate
            ),
        )
    }
    if reward_model and reward_model_name:
        versions["reward_model"] = registry.register_model(
            reward_model_name,
            reward_model,
            run_id,
            layout.REWARD_MODEL_ARTIFACT_PATH,
            {**tags, "rlhf.policy_version": versions["policy"].version},
            lambda local, dest: mlflow_models.save_reward_model(
                local, dest, serving.scoring, reward_model
            ),
        )
    for version in versions.values():
        registry.set_alias(version, decision.alias)
        log.info("registered %s version %s as %s", version.name, version.version, decision.alias)
    return versions
