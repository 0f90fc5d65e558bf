"""The pipeline DAGs. Parameters with defaults run the built-in demo task end to end.

Main hyperparameters are named parameters (visible in the KFP UI); every other stage field can
be set through that stage's ``*_overrides`` dict, which wins over the named parameters.

Every task goes through ``configure(task, stage)``: its image, resources, GPUs, retries, caching
and secrets on a cluster come from the cluster config (see cluster.py), one place for all
pipelines.
"""

# No `from __future__ import annotations` here: KFP reads the real annotation objects.
from kfp import dsl

from rlhf.config import EvalConfig, PPOConfig, RewardConfig, SFTConfig
from rlhf.pipeline import components as c
from rlhf.pipeline.cluster import configure

PIPELINE_NAME = "rlhf"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="RLHF: prepare data -> supervised fine-tuning -> reward model -> PPO -> evaluate.",
)
def rlhf_pipeline(
    sft_data: str = "",
    preference_data: str = "",
    prompt_data: str = "",
    eval_prompt_data: str = "",
    base_model: str = SFTConfig.base_model,
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    sft_epochs: int = SFTConfig.epochs,
    sft_lr: float = SFTConfig.lr,
    sft_batch_size: int = SFTConfig.batch_size,
    reward_epochs: int = RewardConfig.epochs,
    reward_lr: float = RewardConfig.lr,
    reward_batch_size: int = RewardConfig.batch_size,
    ppo_iterations: int = PPOConfig.iterations,
    ppo_lr: float = PPOConfig.lr,
    kl_coef: float = PPOConfig.kl_coef,
    kl_target: float = PPOConfig.kl_target,
    eval_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    gold_reward: str = "auto",
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    reward_overrides: dict = {},
    ppo_overrides: dict = {},
    eval_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
):
    """Data URIs are comma-separated lists of files or folders (local or s3://); with none
    given the demo task is generated. ``gold_reward`` is "auto" (the demo's gold reward on demo
    data), an import path "module:function", or "" for none. ``publish_to`` (an s3:// prefix)
    also publishes every output under ``<publish_to>/<pipeline_run>/<stage>``."""
    # Every task: its MLflow run, and the root its outputs are published under.
    tracking = dict(
        pipeline_run=pipeline_run,
        mlflow_experiment=mlflow_experiment,
        track=track,
        publish_to=publish_to,
    )
    prep = c.prepare_data(
        sft_data=sft_data,
        preference_data=preference_data,
        prompt_data=prompt_data,
        eval_prompt_data=eval_prompt_data,
        prepare_overrides=prepare_overrides,
        demo_overrides=demo_overrides,
        **tracking,
    ).set_display_name("prepare data")
    configure(prep, "prepare")
    sft = c.supervised_finetune(
        base_model=base_model,
        seed=seed,
        max_length=max_length,
        epochs=sft_epochs,
        lr=sft_lr,
        batch_size=sft_batch_size,
        overrides=sft_overrides,
        data=prep.outputs["sft"],
        **tracking,
    ).set_display_name("supervised fine-tuning")
    configure(sft, "sft")
    rm = c.train_reward_model(
        seed=seed,
        max_length=max_length,
        epochs=reward_epochs,
        lr=reward_lr,
        batch_size=reward_batch_size,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=reward_overrides,
        preferences=prep.outputs["preferences"],
        sft_model=sft.outputs["model"],
        **tracking,
    ).set_display_name("reward model")
    configure(rm, "reward")
    policy = c.ppo_train(
        seed=seed,
        iterations=ppo_iterations,
        lr=ppo_lr,
        kl_coef=kl_coef,
        kl_target=kl_target,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=ppo_overrides,
        prompts=prep.outputs["prompts"],
        sft_data=prep.outputs["sft"],
        sft_model=sft.outputs["model"],
        reward_model=rm.outputs["model"],
        **tracking,
    ).set_display_name("PPO")
    configure(policy, "ppo")
    evaluation = c.evaluate_policy(
        seed=seed,
        samples_per_prompt=eval_samples_per_prompt,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=eval_overrides,
        eval_prompts=prep.outputs["eval_prompts"],
        sft_data=prep.outputs["sft"],
        candidate=policy.outputs["model"],
        reference=sft.outputs["model"],
        reward_model=rm.outputs["model"],
        **tracking,
    ).set_display_name("evaluate")
    configure(evaluation, "evaluate")


PIPELINES = {"rlhf": rlhf_pipeline}


def get_pipeline(name: str):
    """The pipeline called ``name``, or a clear error listing the known ones."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; known: {sorted(PIPELINES)}")
    return PIPELINES[name]
