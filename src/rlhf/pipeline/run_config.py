"""The run config (``rlhf run --config``, ``rlhf submit``, ``rlhf schedule create``) mapped onto
the parameters of one pipeline: the one mapping local runs, runs on KFP and schedules share.

A run config has sections ``data``, ``pipeline`` and one per stage. Every stage section is
checked against its dataclass; the sections of stages the named pipeline has become its named
parameters and ``<section>_overrides`` dicts, the others are left out, so one file serves every
pipeline.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from rlhf.config import (
    DemoConfig,
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    PPOConfig,
    PrepareConfig,
    RewardConfig,
    SFTConfig,
    from_dict,
)
from rlhf.pipeline.pipelines import get_pipeline, stage_sections

log = logging.getLogger("rlhf.pipeline")

# Config-file fields that are named pipeline parameters; every other stage field travels in
# that stage's ``*_overrides`` dict.
NAMED_PARAMETERS = {
    ("sft", "base_model"): "base_model",
    ("sft", "epochs"): "sft_epochs",
    ("sft", "lr"): "sft_lr",
    ("sft", "batch_size"): "sft_batch_size",
    ("reward", "epochs"): "reward_epochs",
    ("reward", "lr"): "reward_lr",
    ("reward", "batch_size"): "reward_batch_size",
    ("ppo", "iterations"): "ppo_iterations",
    ("ppo", "lr"): "ppo_lr",
    ("ppo", "kl_coef"): "kl_coef",
    ("ppo", "kl_target"): "kl_target",
    ("dpo", "epochs"): "dpo_epochs",
    ("dpo", "lr"): "dpo_lr",
    ("dpo", "beta"): "dpo_beta",
    ("dpo", "loss_type"): "dpo_loss_type",
    ("grpo", "iterations"): "grpo_iterations",
    ("grpo", "lr"): "grpo_lr",
    ("grpo", "group_size"): "grpo_group_size",
    ("grpo", "kl_coef"): "grpo_kl_coef",
    ("eval", "samples_per_prompt"): "eval_samples_per_prompt",
}
# Read by several stages from one pipeline parameter: set once, as pipeline.<name>.
SHARED_PARAMETERS = ("gold_reward",)
STAGE_CONFIGS = {
    "prepare": PrepareConfig,
    "demo": DemoConfig,
    "sft": SFTConfig,
    "reward": RewardConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "grpo": GRPOConfig,
    "eval": EvalConfig,
}
DATA_PARAMETERS = {
    "sft": "sft_data",
    "preferences": "preference_data",
    "prompts": "prompt_data",
    "eval_prompts": "eval_prompt_data",
}


def _typed_parameters(pipeline: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Check names against the pipeline's parameters and give each value the parameter's type
    (YAML reads ``1e-5`` as a string and ``null`` as None; KFP would reject both)."""
    params = inspect.signature(pipeline.pipeline_func).parameters
    out = {}
    for name, value in args.items():
        if name not in params or name == "pipeline_run":
            raise ValueError(
                f"unknown pipeline parameter {name!r}; known: {sorted(set(params) - {'pipeline_run'})}"
            )
        kind = type(params[name].default)
        if value is None:
            value = kind()
        elif kind in (int, float) and not isinstance(value, bool):
            value = kind(float(value)) if kind is int else kind(value)
        elif kind is bool and isinstance(value, str):
            value = value.lower() in ("1", "true", "yes", "on")
        out[name] = value
    return out


def pipeline_arguments(config: dict[str, Any], pipeline: str) -> dict[str, Any]:
    """Map a run config (sections data, pipeline and one per stage) onto the parameters of
    ``pipeline``, validating every stage section against its dataclass first. Sections of
    stages the pipeline does not have (``ppo:`` when running ``dpo``) are checked too, then
    left out: one config file serves every pipeline."""
    sections = stage_sections(pipeline)  # also: a clear error for an unknown pipeline
    known = {"data", "pipeline", *STAGE_CONFIGS}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(known)}")
    args: dict[str, Any] = {}
    for key, uris in (config.get("data") or {}).items():
        if key not in DATA_PARAMETERS:
            raise ValueError(f"data: unknown input {key!r}; known: {sorted(DATA_PARAMETERS)}")
        args[DATA_PARAMETERS[key]] = ",".join([uris] if isinstance(uris, str) else uris)
    for key, value in (config.get("pipeline") or {}).items():
        if key.endswith("_overrides"):
            raise ValueError(f"pipeline.{key}: put those fields in the stage's own section")
        args[key] = value
    for section, cls in STAGE_CONFIGS.items():
        fields = dict(config.get(section) or {})
        from_dict(cls, fields, where=section)  # fail here, not in the third task
        if section not in sections:
            if fields:
                log.info(
                    "pipeline %s has no %s stage: its config section is unused", pipeline, section
                )
            continue
        overrides = {}
        for key, value in fields.items():
            if key in SHARED_PARAMETERS:
                raise ValueError(f"{section}.{key}: set it once for every stage as pipeline.{key}")
            if (section, key) in NAMED_PARAMETERS:
                args[NAMED_PARAMETERS[(section, key)]] = value
            else:
                overrides[key] = value
        args[f"{section}_overrides"] = overrides
    return args


def pipeline_parameters(config: dict[str, Any], pipeline: str) -> dict[str, Any]:
    """The parameters a run of ``pipeline`` gets from a run config: mapped, checked against
    that pipeline's signature and typed. What the config does not set is left out (the
    pipeline's defaults apply), ``pipeline_run`` included unless the config names a key (the
    caller's default then: KFP's run id, or a local key)."""
    args = pipeline_arguments(config, pipeline)
    run_key = args.pop("pipeline_run", None)
    typed = _typed_parameters(get_pipeline(pipeline), args)
    return {**typed, "pipeline_run": str(run_key)} if run_key else typed
