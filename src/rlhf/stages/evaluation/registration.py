"""The evaluation's side of the champion gate (``rlhf.stages.champion_gate``): the decision
from the candidate's and the champion's judged samples, and registering the candidate (and its
reward model) with the decision's alias and the evaluation's tags."""

from __future__ import annotations

import logging
from typing import Any

from rlhf import storage
from rlhf.algorithms.ranking import win_rate
from rlhf.config import EvalConfig
from rlhf.data.artifacts import manifest_checksum
from rlhf.modeling import mlflow_models
from rlhf.registry import ModelRegistry, Version
from rlhf.stages import champion_gate
from rlhf.stages.champion_gate import GateDecision, ServingSettings
from rlhf.stages.evaluation.compared import CANDIDATE, CHAMPION_MODEL, ModelResult
from rlhf.stages.specs import EvalInputs
from rlhf.tracking import Tracker

log = logging.getLogger("rlhf.evaluate")


def gate_decision(results: dict[str, ModelResult], judge: str, config: EvalConfig) -> GateDecision:
    """The gate's decision from the candidate's and the champion's judged samples (paired by
    prompt and sample index, like ``win_rate_rm``); no champion sampled: the first model."""
    cand = results[CANDIDATE]
    champ = results.get(CHAMPION_MODEL)
    win = None
    if champ is not None:
        win = win_rate(
            champion_gate.judged(cand.rm_scores, cand.gold_scores, judge),
            champion_gate.judged(champ.rm_scores, champ.gold_scores, judge),
        )
    decision = champion_gate.decide(
        win, len(cand.responses), config.gate_threshold, config.gate_min_samples, judge
    )
    log.info("evaluate: champion gate -> %s (%s)", decision.alias, decision.reason)
    return decision


def data_checksums(inputs: EvalInputs) -> dict[str, str]:
    """``rlhf.data_sha256.<role>`` tags: the prepared data each model saw (from its manifest)
    and the evaluation prompts."""
    tags = {"rlhf.data_sha256.eval_prompts": manifest_checksum(inputs.eval_prompts)}
    roles = (("policy", inputs.candidate), ("reference", inputs.reference))
    for role, uri in (*roles, ("reward_model", inputs.reward_model)):
        if not uri:
            continue
        try:
            checksum = storage.read_manifest(storage.local_path(uri)).get("data_sha256")
        except (FileNotFoundError, storage.StorageError):  # a hub id or a foreign folder
            checksum = None
        if checksum:
            tags[f"rlhf.data_sha256.{role}"] = str(checksum)
    return tags


def check_registrable(config: EvalConfig, inputs: EvalInputs) -> None:
    """Refuse, before any model samples, a candidate (or reward model) that registration would
    refuse after the sampling: a LoRA adapter folder, or no model folder at all. A local path
    that is not there is left to the loaders (a Hugging Face Hub id is no folder either)."""
    wanted = [("policy", inputs.candidate, "registered_policy")]
    if inputs.reward_model and config.registered_reward_model:
        wanted.append(("reward model", inputs.reward_model, "registered_reward_model"))
    for what, uri, setting in wanted:
        folder = storage.local_path(uri)
        if storage.is_s3(uri) or folder.is_dir():
            mlflow_models.check_model_folder(folder, what, setting)


def serving_settings(config: EvalConfig) -> ServingSettings:
    """The registered models generate and score as this evaluation did."""
    return ServingSettings(
        generation=mlflow_models.generation_config(
            config.max_new_tokens, config.temperature, config.top_p
        ),
        chat_template=config.chat_template,
        scoring={"device": "auto", "dtype": config.dtype, "batch_size": config.batch_size},
    )


def register(
    registry: ModelRegistry,
    gate: GateDecision,
    config: EvalConfig,
    inputs: EvalInputs,
    metrics: dict[str, float],
    tracker: Tracker,
    champion: Version | None,
) -> None:
    """Register the candidate (and its reward model) with the gate's alias, tagged with the
    runs, the data checksums and every metric; tag the stage run with what was registered."""
    assert tracker.run_id is not None  # a registry comes with a tracked run
    tags: dict[str, Any] = {
        "rlhf.pipeline_run": tracker.pipeline_run or "",
        "rlhf.evaluation_run": tracker.run_id,
        "rlhf.gate.previous_champion": champion.version if champion else "",
        **data_checksums(inputs),
        **{f"eval.{k}": f"{v:.6g}" for k, v in metrics.items()},
    }
    versions = champion_gate.register_outcome(
        registry,
        gate,
        config.registered_policy,
        config.registered_reward_model if inputs.reward_model else "",
        inputs.candidate,
        inputs.reward_model,
        tracker.run_id,
        tags,
        serving_settings(config),
    )
    tracker.set_tags(
        {
            "rlhf.gate.alias": gate.alias,
            "rlhf.gate.reason": gate.reason,
            **{f"rlhf.registered.{role}": f"{v.name}/{v.version}" for role, v in versions.items()},
        }
    )
