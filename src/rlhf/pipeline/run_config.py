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

from rlhf.config import DemoConfig, from_dict
from rlhf.pipeline.pipelines import get_pipeline, stage_sections
from rlhf.stages.specs import (
    ARTIFACTS,
    SHARED_PARAMETERS,
    STAGES,
    pipeline_parameter,
    uris_parameter,
)

log = logging.getLogger("rlhf.pipeline")


def stage_configs() -> dict[str, type]:
    """The config sections: one per stage, read by its dataclass, and the demo task's (read by
    the prepare stage when no data is given)."""
    return {**{name: spec.config for name, spec in STAGES.items()}, "demo": DemoConfig}


def _pipeline_name(section: str, field: str) -> str | None:
    """The named pipeline parameter ``section.field`` sets, or None (it goes in overrides)."""
    spec = STAGES.get(section)
    if spec is None or field not in spec.parameters or field in SHARED_PARAMETERS:
        return None
    return pipeline_parameter(section, field)


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
        elif kind is list and not isinstance(value, list):
            value = [value]
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
    signature = inspect.signature(get_pipeline(pipeline).pipeline_func).parameters
    configs = stage_configs()
    known = {"data", "pipeline", *configs}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(known)}")
    args: dict[str, Any] = {}
    for key, uris in (config.get("data") or {}).items():
        if key not in ARTIFACTS:
            raise ValueError(f"data: unknown input {key!r}; known: {sorted(ARTIFACTS)}")
        args[uris_parameter(key)] = [uris] if isinstance(uris, str) else list(uris)
    for key, value in (config.get("pipeline") or {}).items():
        if key.endswith("_overrides"):
            raise ValueError(f"pipeline.{key}: put those fields in the stage's own section")
        args[key] = value
    for section, cls in configs.items():
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
            # "auto" is resolved per run from the data source: one setting for every stage.
            if key == "gold_reward":
                raise ValueError(f"{section}.{key}: set it once for every stage as pipeline.{key}")
            name = _pipeline_name(section, key)
            if name:
                args[name] = value
            else:
                overrides[key] = value
        # A pipeline's own default overrides (the kto pipeline's prepare_overrides) stay
        # unless the section sets those keys itself.
        default = signature[f"{section}_overrides"].default
        args[f"{section}_overrides"] = {**(default or {}), **overrides}
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
