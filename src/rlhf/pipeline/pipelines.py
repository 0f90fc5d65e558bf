"""The pipeline DAGs, one per algorithm. Parameters with defaults run the built-in demo task
end to end.

- ``ppo``:  prepare -> SFT -> reward model -> PPO  -> evaluate
- ``dpo``:  prepare -> SFT ----------------> DPO  -> evaluate (no reward model)
- ``grpo``: prepare -> SFT -> reward model -> GRPO -> evaluate

The shared steps are built by the same helpers, so the three differ only in their middle.
Main hyperparameters are named parameters (visible in the KFP UI); every other stage field can
be set through that stage's ``*_overrides`` dict, which wins over the named parameters.
Data URIs are comma-separated lists of files or folders (local or s3://); with none given the
demo task is generated. ``gold_reward`` is "auto" (the demo's gold reward on demo data), an
import path "module:function", or "" for none.

Every task goes through ``configure(task, stage)``: its image, resources, GPUs, retries, caching
and secrets on a cluster come from the cluster config (see cluster.py), one place for all
pipelines.
"""

# No `from __future__ import annotations` here: KFP reads the real annotation objects.
import inspect

from kfp import dsl

from rlhf.config import DPOConfig, EvalConfig, GRPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhf.pipeline import components as c
from rlhf.pipeline.cluster import configure

PIPELINE_NAME = "ppo"  # the default pipeline (rlhf run, rlhf submit)


def _task_context(pipeline_run, mlflow_experiment, track, publish_to) -> dict:
    """What every task receives: its MLflow run, and the root its outputs are published under."""
    return dict(
        pipeline_run=pipeline_run,
        mlflow_experiment=mlflow_experiment,
        track=track,
        publish_to=publish_to,
    )


def _prepare_and_sft(
    sft_data, preference_data, prompt_data, eval_prompt_data, prepare_overrides,
    demo_overrides, base_model, seed, max_length, sft_epochs, sft_lr, sft_batch_size,
    sft_overrides, tracking,
):  # fmt: skip
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
    return prep, sft


def _reward_model(
    prep, sft, seed, max_length, epochs, lr, batch_size, gold_reward, overrides, tracking
):
    rm = c.train_reward_model(
        seed=seed,
        max_length=max_length,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=overrides,
        preferences=prep.outputs["preferences"],
        sft_model=sft.outputs["model"],
        **tracking,
    ).set_display_name("reward model")
    configure(rm, "reward")
    return rm


def _evaluate(prep, sft, policy, rm, seed, samples_per_prompt, gold_reward, overrides, tracking):
    """``rm`` None: the evaluation runs without a reward model (gold, KL, length, perplexity)."""
    extra = {"reward_model": rm.outputs["model"]} if rm is not None else {}
    evaluation = c.evaluate_policy(
        seed=seed,
        samples_per_prompt=samples_per_prompt,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=overrides,
        eval_prompts=prep.outputs["eval_prompts"],
        sft_data=prep.outputs["sft"],
        candidate=policy.outputs["model"],
        reference=sft.outputs["model"],
        **extra,
        **tracking,
    ).set_display_name("evaluate")
    configure(evaluation, "evaluate")


@dsl.pipeline(
    name="rlhf-ppo",
    description="RLHF with PPO: prepare data -> supervised fine-tuning -> reward model -> PPO "
    "-> evaluate.",
)
def ppo_pipeline(
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
    tracking = _task_context(pipeline_run, mlflow_experiment, track, publish_to)
    prep, sft = _prepare_and_sft(
        sft_data, preference_data, prompt_data, eval_prompt_data, prepare_overrides,
        demo_overrides, base_model, seed, max_length, sft_epochs, sft_lr, sft_batch_size,
        sft_overrides, tracking,
    )  # fmt: skip
    rm = _reward_model(
        prep, sft, seed, max_length, reward_epochs, reward_lr, reward_batch_size, gold_reward,
        reward_overrides, tracking,
    )  # fmt: skip
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
    _evaluate(
        prep, sft, policy, rm, seed, eval_samples_per_prompt, gold_reward, eval_overrides,
        tracking,
    )  # fmt: skip


@dsl.pipeline(
    name="rlhf-dpo",
    description="Preference optimisation without a reward model: prepare data -> supervised "
    "fine-tuning -> DPO -> evaluate.",
)
def dpo_pipeline(
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
    dpo_epochs: int = DPOConfig.epochs,
    dpo_lr: float = DPOConfig.lr,
    dpo_beta: float = DPOConfig.beta,
    dpo_loss_type: str = DPOConfig.loss_type,
    eval_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    gold_reward: str = "auto",
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    dpo_overrides: dict = {},
    eval_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
):
    tracking = _task_context(pipeline_run, mlflow_experiment, track, publish_to)
    prep, sft = _prepare_and_sft(
        sft_data, preference_data, prompt_data, eval_prompt_data, prepare_overrides,
        demo_overrides, base_model, seed, max_length, sft_epochs, sft_lr, sft_batch_size,
        sft_overrides, tracking,
    )  # fmt: skip
    policy = c.dpo_train(
        seed=seed,
        max_length=max_length,
        epochs=dpo_epochs,
        lr=dpo_lr,
        beta=dpo_beta,
        loss_type=dpo_loss_type,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=dpo_overrides,
        preferences=prep.outputs["preferences"],
        sft_model=sft.outputs["model"],
        **tracking,
    ).set_display_name("DPO")
    configure(policy, "dpo")
    _evaluate(
        prep, sft, policy, None, seed, eval_samples_per_prompt, gold_reward, eval_overrides,
        tracking,
    )  # fmt: skip


@dsl.pipeline(
    name="rlhf-grpo",
    description="RLHF with GRPO (no critic): prepare data -> supervised fine-tuning -> reward "
    "model -> GRPO -> evaluate.",
)
def grpo_pipeline(
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
    grpo_iterations: int = GRPOConfig.iterations,
    grpo_lr: float = GRPOConfig.lr,
    grpo_group_size: int = GRPOConfig.group_size,
    grpo_kl_coef: float = GRPOConfig.kl_coef,
    eval_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    gold_reward: str = "auto",
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    reward_overrides: dict = {},
    grpo_overrides: dict = {},
    eval_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
):
    tracking = _task_context(pipeline_run, mlflow_experiment, track, publish_to)
    prep, sft = _prepare_and_sft(
        sft_data, preference_data, prompt_data, eval_prompt_data, prepare_overrides,
        demo_overrides, base_model, seed, max_length, sft_epochs, sft_lr, sft_batch_size,
        sft_overrides, tracking,
    )  # fmt: skip
    rm = _reward_model(
        prep, sft, seed, max_length, reward_epochs, reward_lr, reward_batch_size, gold_reward,
        reward_overrides, tracking,
    )  # fmt: skip
    policy = c.grpo_train(
        seed=seed,
        iterations=grpo_iterations,
        lr=grpo_lr,
        group_size=grpo_group_size,
        kl_coef=grpo_kl_coef,
        gold_reward=gold_reward,
        data_source=prep.outputs["Output"],
        overrides=grpo_overrides,
        prompts=prep.outputs["prompts"],
        sft_model=sft.outputs["model"],
        reward_model=rm.outputs["model"],
        **tracking,
    ).set_display_name("GRPO")
    configure(policy, "grpo")
    _evaluate(
        prep, sft, policy, rm, seed, eval_samples_per_prompt, gold_reward, eval_overrides,
        tracking,
    )  # fmt: skip


PIPELINES = {"ppo": ppo_pipeline, "dpo": dpo_pipeline, "grpo": grpo_pipeline}


def get_pipeline(name: str):
    """The pipeline called ``name``, or a clear error listing the known ones."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; known: {sorted(PIPELINES)}")
    return PIPELINES[name]


def stage_sections(name: str) -> tuple[str, ...]:
    """The run-config sections pipeline ``name`` has stages for (what ``rlhf run`` maps onto
    its ``<section>_overrides`` parameters), read from those parameters."""
    params = inspect.signature(get_pipeline(name).pipeline_func).parameters
    return tuple(p.removesuffix("_overrides") for p in params if p.endswith("_overrides"))
