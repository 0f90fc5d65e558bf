"""Run a pipeline on this machine with ``kfp.local`` (no cluster, no Docker).

``SubprocessRunner(use_venv=False)`` runs each lightweight component in a subprocess of this
interpreter, so the tasks use the installed ``rlhf`` package; artifacts land under
``output_root/<pipeline>-<timestamp>/<task>/<output>``.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import tracking
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
from rlhf.console.kfp_output import local_run_console
from rlhf.console.stage_report import StageRecord
from rlhf.pipeline.cluster import LOCAL, build
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


@dataclass
class LocalRun:
    pipeline_run: str  # the key grouping this run's MLflow runs
    run_dir: Path  # where the task outputs are
    mlflow_parent_run_id: str | None
    experiment: str
    stages: list[StageRecord]  # in the order they finished, with their time and metrics
    seconds: float  # wall time of the whole run


class PipelineFailed(RuntimeError):
    """A task of a local pipeline run failed; its log (printed above) says why."""


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


def pipeline_arguments(config: dict[str, Any], pipeline: str = "ppo") -> dict[str, Any]:
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


def run_local(
    config: dict[str, Any], output_root: str | Path, pipeline: str = "ppo", verbose: bool = False
) -> LocalRun:
    """Run ``pipeline`` with kfp.local. Its tasks print their start and summary lines and
    progress; kfp's own output (the executor input JSON, per-task banners) only when
    ``verbose`` (``rlhf.console.kfp_output``)."""
    from kfp import local

    output_root = Path(output_root).resolve()
    output_root.mkdir(parents=True, exist_ok=True)
    # Tasks run in subprocesses: give them an absolute tracking URI so they all write to
    # the same store whatever their working directory.
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri

    fn = get_pipeline(pipeline)
    args = pipeline_arguments(config, pipeline)
    pipeline_run = args.pop("pipeline_run", None) or f"local-{time.strftime('%Y%m%d-%H%M%S')}"
    args = _typed_parameters(fn, args)
    experiment = args.get("mlflow_experiment", "rlhf")
    track = args.get("track", True)
    before = set(output_root.iterdir())
    started = time.time()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output_root))
    try:
        with local_run_console(verbose) as console:
            # Cluster settings (retries with backoff, timeouts, Secrets) are for pods, not here.
            build(fn, LOCAL)(**args, pipeline_run=pipeline_run)
    except RuntimeError as e:
        if track:
            tracking.finish_pipeline_run(
                tracking.start_pipeline_run(pipeline_run, experiment), failed=True
            )
        raise PipelineFailed(str(e)) from None
    new = sorted(set(output_root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    parent = None
    if track:
        parent = tracking.start_pipeline_run(pipeline_run, experiment)
        tracking.finish_pipeline_run(parent)
    return LocalRun(
        pipeline_run, new[-1] if new else output_root, parent, experiment, console.records,
        time.time() - started,
    )  # fmt: skip
