"""What each KFP component does, as plain functions: map artifact paths and parameters onto a
stage's ``run``, open the stage's MLflow run, and copy the stage's metrics into KFP ``Metrics``.

The component functions in ``components.py`` are one-line calls into here, because KFP ships a
lightweight component's *source* to the pod: keeping logic here keeps it importable, testable
and versioned with the package in the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf import log_setup, tracking
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
from rlhf.console.stage_report import reporting

log = logging.getLogger("rlhf.pipeline")

DEMO_GOLD_REWARD = "rlhf.data.demo_task:gold_reward"


def _uris(text: str) -> list[str]:
    return [u.strip() for u in (text or "").split(",") if u.strip()]


# Where each stage publishes under the pipeline's ``publish_to`` root, per pipeline run.
PUBLISH_FOLDERS = {
    "prepare": "data",
    "sft": "sft",
    "reward": "reward_model",
    "ppo": "policy",
    "dpo": "policy",
    "grpo": "policy",
    "evaluate": "evaluation",
}


def publish_destination(publish_to: str, pipeline_run: str, stage: str) -> dict[str, str]:
    """``{"publish_to": "<root>/<pipeline_run>/<folder>"}`` for a stage's config, or ``{}``
    when the pipeline publishes nothing (a stage's own ``publish_to`` override wins)."""
    if not publish_to:
        return {}
    return {"publish_to": f"{publish_to.rstrip('/')}/{pipeline_run}/{PUBLISH_FOLDERS[stage]}"}


def _report(metrics_artifact: Any, metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        metrics_artifact.log_metric(key.replace("/", "."), float(value))


def _run_stage(
    stage: str,
    config_cls: type,
    fields: dict[str, Any],
    overrides: dict,
    context: tuple[str, str, bool, str],
    metrics: Any,
    call: Callable[[Any, tracking.Tracker], dict[str, float]],
) -> None:
    """Build the stage's config (named parameters, publish destination, then overrides), run
    it inside its MLflow run (``context``: pipeline run, experiment, track, publish_to root)
    and report its metrics to KFP."""
    log_setup.configure()
    pipeline_run, experiment, track, publish_to = context
    fields = {**fields, **publish_destination(publish_to, pipeline_run, stage)}
    config = from_dict(config_cls, {**fields, **overrides}, f"{stage} overrides")
    with (
        reporting(stage) as record,
        tracking.stage_run(stage, pipeline_run, experiment, track) as tracker,
    ):
        result = record.metrics = call(config, tracker)
    _report(metrics, result)


def prepare(
    sft_data: str,
    preference_data: str,
    prompt_data: str,
    eval_prompt_data: str,
    prepare_overrides: dict,
    demo_overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    sft: Any,
    preferences: Any,
    prompts: Any,
    eval_prompts: Any,
    rejects: Any,
    metrics: Any,
) -> str:
    """Returns the data source: "demo" when no data was given and the demo task was generated,
    else "files" (later stages use it to pick the demo's gold reward automatically)."""
    from rlhf.stages import prepare as stage

    log_setup.configure()
    with reporting("prepare") as record:
        inputs = stage.PrepareInputs(
            _uris(sft_data), _uris(preference_data), _uris(prompt_data), _uris(eval_prompt_data)
        )
        source = "files"
        if not (inputs.sft or inputs.preferences or inputs.prompts or inputs.eval_prompts):
            from rlhf.data.demo_task import write_demo_files

            demo_dir = Path(sft.path).parent / "demo_files"
            demo = from_dict(DemoConfig, demo_overrides, "demo_overrides")
            files = write_demo_files(demo_dir, demo)
            inputs = stage.PrepareInputs(
                [str(files["sft"])],
                [str(files["preferences"])],
                [str(files["prompts"])],
                [str(files["eval_prompts"])],
            )
            source = "demo"
            log.info("no data given: generated the demo task into %s", demo_dir)
        destination = publish_destination(publish_to, pipeline_run, "prepare")
        config = from_dict(PrepareConfig, {**destination, **prepare_overrides}, "prepare_overrides")
        outputs = stage.PrepareOutputs(
            sft.path, preferences.path, prompts.path, eval_prompts.path, rejects.path
        )
        with tracking.stage_run("prepare", pipeline_run, mlflow_experiment, track) as tracker:
            tracker.set_tags({"data_source": source})
            record.metrics = stage.run(config, inputs, outputs, tracker)
    _report(metrics, record.metrics)
    return source


def sft(
    base_model: str,
    seed: int,
    max_length: int,
    epochs: int,
    lr: float,
    batch_size: int,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    data: Any,
    model: Any,
    metrics: Any,
) -> None:
    from rlhf.stages import sft as stage

    fields = dict(
        base_model=base_model,
        seed=seed,
        max_length=max_length,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
    )
    context = (pipeline_run, mlflow_experiment, track, publish_to)
    _run_stage(
        "sft", SFTConfig, fields, overrides, context, metrics,
        lambda config, tracker: stage.run(
            config, stage.SFTInputs(data.path), stage.SFTOutputs(model.path), tracker
        ),
    )  # fmt: skip


def _gold(gold_reward: str, data_source: str) -> str | None:
    """Resolve "auto": the demo task's gold reward on demo data, none otherwise."""
    if gold_reward == "auto":
        return DEMO_GOLD_REWARD if data_source == "demo" else None
    return gold_reward or None


def reward(
    seed: int,
    max_length: int,
    epochs: int,
    lr: float,
    batch_size: int,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    preferences: Any,
    sft_model: Any,
    model: Any,
    metrics: Any,
) -> None:
    """``gold_reward="auto"`` uses the demo task's gold reward when the data is the demo's."""
    from rlhf.stages import reward as stage

    fields = dict(
        seed=seed,
        max_length=max_length,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        gold_reward=_gold(gold_reward, data_source),
    )
    inputs = stage.RewardInputs(preferences.path, sft_model.path)
    context = (pipeline_run, mlflow_experiment, track, publish_to)
    _run_stage(
        "reward", RewardConfig, fields, overrides, context, metrics,
        lambda config, tracker: stage.run(config, inputs, stage.RewardOutputs(model.path), tracker),
    )  # fmt: skip


def ppo(
    seed: int,
    iterations: int,
    lr: float,
    kl_coef: float,
    kl_target: float,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    prompts: Any,
    sft_data: Any,
    sft_model: Any,
    reward_model: Any,
    model: Any,
    metrics: Any,
) -> None:
    from rlhf.stages import ppo as stage

    fields = dict(
        seed=seed,
        iterations=iterations,
        lr=lr,
        kl_coef=kl_coef,
        kl_target=kl_target,
        gold_reward=_gold(gold_reward, data_source),
    )
    inputs = stage.PPOInputs(prompts.path, sft_model.path, reward_model.path, sft_data.path)
    context = (pipeline_run, mlflow_experiment, track, publish_to)
    _run_stage(
        "ppo", PPOConfig, fields, overrides, context, metrics,
        lambda config, tracker: stage.run(config, inputs, stage.PPOOutputs(model.path), tracker),
    )  # fmt: skip


def dpo(
    seed: int,
    max_length: int,
    epochs: int,
    lr: float,
    beta: float,
    loss_type: str,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    preferences: Any,
    sft_model: Any,
    model: Any,
    metrics: Any,
) -> None:
    from rlhf.stages import dpo as stage

    fields = dict(
        seed=seed,
        max_length=max_length,
        epochs=epochs,
        lr=lr,
        beta=beta,
        loss_type=loss_type,
        gold_reward=_gold(gold_reward, data_source),
    )
    inputs = stage.DPOInputs(preferences.path, sft_model.path)
    context = (pipeline_run, mlflow_experiment, track, publish_to)
    _run_stage(
        "dpo", DPOConfig, fields, overrides, context, metrics,
        lambda config, tracker: stage.run(config, inputs, stage.DPOOutputs(model.path), tracker),
    )  # fmt: skip


def grpo(
    seed: int,
    iterations: int,
    lr: float,
    group_size: int,
    kl_coef: float,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    prompts: Any,
    sft_model: Any,
    reward_model: Any,
    model: Any,
    metrics: Any,
) -> None:
    from rlhf.stages import grpo as stage

    fields = dict(
        seed=seed,
        iterations=iterations,
        lr=lr,
        group_size=group_size,
        kl_coef=kl_coef,
        gold_reward=_gold(gold_reward, data_source),
    )
    inputs = stage.GRPOInputs(prompts.path, sft_model.path, reward_model.path)
    context = (pipeline_run, mlflow_experiment, track, publish_to)
    _run_stage(
        "grpo", GRPOConfig, fields, overrides, context, metrics,
        lambda config, tracker: stage.run(config, inputs, stage.GRPOOutputs(model.path), tracker),
    )  # fmt: skip


def evaluate(
    seed: int,
    samples_per_prompt: int,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    publish_to: str,
    eval_prompts: Any,
    sft_data: Any,
    candidate: Any,
    reference: Any,
    report: Any,
    metrics: Any,
    reward_model: Any = None,
) -> None:
    """``reward_model`` None (the DPO pipeline): evaluation without the RM-judged metrics."""
    from rlhf.stages import evaluate as stage

    fields = dict(
        seed=seed,
        samples_per_prompt=samples_per_prompt,
        gold_reward=_gold(gold_reward, data_source),
    )
    rm_path = reward_model.path if reward_model is not None else None
    inputs = stage.EvalInputs(
        eval_prompts.path, candidate.path, reference.path, rm_path, sft_data.path
    )
    # KFP's HTML artifact is one file; the UI renders it in the run's visualisations.
    outputs = stage.EvalOutputs(report.path)
    context = (pipeline_run, mlflow_experiment, track, publish_to)
    _run_stage(
        "evaluate", EvalConfig, fields, overrides, context, metrics,
        lambda config, tracker: stage.run(config, inputs, outputs, tracker),
    )  # fmt: skip
