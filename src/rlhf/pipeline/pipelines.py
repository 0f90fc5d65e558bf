"""The pipeline DAGs, one per algorithm. Parameters with defaults run the built-in demo task
end to end.

- ``ppo``:  prepare -> SFT -> reward model -> PPO  -> evaluate
- ``dpo``:  prepare -> SFT ----------------> DPO  -> evaluate (no reward model)
- ``grpo``: prepare -> SFT -> reward model -> GRPO -> evaluate
- ``online_dpo``: prepare -> SFT -> reward model -> online DPO -> evaluate
- ``collect``: prepare -> SFT (or a given ``model``) -> sample candidates: a labelling batch of
  K answers per prompt for people (``rlhf label import``) or a judge (``rlhf judge``) to label
- ``kto``:  prepare -> SFT ----------------> KTO  -> evaluate (unpaired feedback; no reward
  model). Its prepare step also splits the preference pairs into unpaired rows
  (``unpaired_from_preferences``), so the demo task runs it too.

Each ends, when ``deploy_enabled`` is on, with the deploy step: it runs only when the
evaluation's champion gate promoted the candidate (the evaluate task's output), and serves the
policy the run published (``<publish_to>/<run>/policy``) as a KServe InferenceService.

Every task is made by :func:`_task` from its stage's spec (``rlhf.stages.specs``): the stage's
named parameters ("<stage>_<field>", or one shared ``seed``/``max_length``/``gold_reward``),
its ``<stage>_overrides`` dict (every other config field; it wins over the named parameters),
its input artifacts and the context every task gets. So the three pipelines differ only in
their middle, and a test checks each signature against the specs. Data inputs are lists of
files or folders (local or s3://); with none given the demo task is generated. ``gold_reward``
is "auto" (the demo's gold reward on demo data), an import path "module:function", or "" for
none.

Every task goes through ``configure(task, stage)``: its image, resources, GPUs, retries, caching
and secrets on a cluster come from the cluster config (see cluster.py), one place for all
pipelines.
"""

# No `from __future__ import annotations` here: KFP reads the real annotation objects.
import inspect

from kfp import dsl

from rlhf.config import (
    DeployConfig,
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    KTOConfig,
    OnlineDPOConfig,
    PPOConfig,
    RewardConfig,
    SampleConfig,
    SFTConfig,
)
from rlhf.pipeline.cluster import configure
from rlhf.pipeline.component_runner import CONTEXT
from rlhf.pipeline.components import COMPONENTS
from rlhf.stages.specs import get_stage, pipeline_parameter, ports, uris_parameter

PIPELINE_NAME = "ppo"  # the default pipeline (rlhf run, rlhf submit)


def _task(stage: str, params: dict, **artifacts):
    """The task of ``stage``: its component called with the pipeline's ``params`` as its spec
    maps them, plus ``artifacts`` (outputs of earlier tasks), configured for the cluster."""
    spec = get_stage(stage)
    named = {f: params[pipeline_parameter(stage, f)] for f in spec.parameters}
    # List-of-URI inputs (the prepare stage's data): pipeline and component parameters alike.
    uris = [
        uris_parameter(p.name) for p in ports(spec.inputs) if p.kind == "uris" and p.in_pipeline
    ]
    context = {name: params[name] for name in CONTEXT}
    task = COMPONENTS[stage](
        **named,
        **{name: params[name] for name in uris},
        overrides=params[f"{stage}_overrides"],
        **artifacts,
        **context,
    )
    task.set_display_name(spec.title)
    return configure(task, stage)


def _prepare_and_sft(params: dict):
    prep = _task("prepare", params, demo_overrides=params["demo_overrides"])
    return prep, _task("sft", params, data=prep.outputs["sft"])


def _reward_model(params: dict, prep, sft):
    return _task(
        "reward",
        params,
        data_source=prep.outputs["Output"],
        preferences=prep.outputs["preferences"],
        sft_model=sft.outputs["model"],
    )


def _evaluate_and_deploy(params: dict, prep, sft, policy, rm) -> None:
    """The evaluation, then the optional deploy step. ``rm`` None: the evaluation runs without
    a reward model (gold, KL, length, perplexity)."""
    extra = {"reward_model": rm.outputs["model"]} if rm is not None else {}
    evaluation = _task(
        "evaluate",
        params,
        data_source=prep.outputs["Output"],
        eval_prompts=prep.outputs["eval_prompts"],
        sft_data=prep.outputs["sft"],
        candidate=policy.outputs["model"],
        reference=sft.outputs["model"],
        **extra,
    )
    # Deploy only when asked to, and only a candidate the champion gate promoted (the evaluate
    # component returns that); a challenger leaves the served champion as it is.
    with (
        dsl.If(params["deploy_enabled"] == True, name="deploy-enabled"),  # noqa: E712
        dsl.If(evaluation.outputs["Output"] == True, name="promoted"),  # noqa: E712
    ):
        _task("deploy", params)


@dsl.pipeline(
    name="rlhf-ppo",
    description="RLHF with PPO: prepare data -> supervised fine-tuning -> reward model -> PPO "
    "-> evaluate.",
)
def ppo_pipeline(
    sft_data: list = [],
    preferences_data: list = [],
    prompts_data: list = [],
    eval_prompts_data: list = [],
    unpaired_data: list = [],
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    gold_reward: str = "auto",
    sft_base_model: str = SFTConfig.base_model,
    sft_epochs: int = SFTConfig.epochs,
    sft_lr: float = SFTConfig.lr,
    sft_batch_size: int = SFTConfig.batch_size,
    reward_epochs: int = RewardConfig.epochs,
    reward_lr: float = RewardConfig.lr,
    reward_batch_size: int = RewardConfig.batch_size,
    ppo_iterations: int = PPOConfig.iterations,
    ppo_lr: float = PPOConfig.lr,
    ppo_kl_coef: float = PPOConfig.kl_coef,
    ppo_kl_target: float = PPOConfig.kl_target,
    evaluate_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    deploy_name: str = DeployConfig.name,
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    reward_overrides: dict = {},
    ppo_overrides: dict = {},
    evaluate_overrides: dict = {},
    deploy_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
    deploy_enabled: bool = False,
):
    params = dict(locals())
    prep, sft = _prepare_and_sft(params)
    rm = _reward_model(params, prep, sft)
    policy = _task(
        "ppo",
        params,
        data_source=prep.outputs["Output"],
        prompts=prep.outputs["prompts"],
        sft_data=prep.outputs["sft"],
        sft_model=sft.outputs["model"],
        reward_model=rm.outputs["model"],
    )
    _evaluate_and_deploy(params, prep, sft, policy, rm)


@dsl.pipeline(
    name="rlhf-dpo",
    description="Preference optimisation without a reward model: prepare data -> supervised "
    "fine-tuning -> DPO -> evaluate.",
)
def dpo_pipeline(
    sft_data: list = [],
    preferences_data: list = [],
    prompts_data: list = [],
    eval_prompts_data: list = [],
    unpaired_data: list = [],
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    gold_reward: str = "auto",
    sft_base_model: str = SFTConfig.base_model,
    sft_epochs: int = SFTConfig.epochs,
    sft_lr: float = SFTConfig.lr,
    sft_batch_size: int = SFTConfig.batch_size,
    dpo_epochs: int = DPOConfig.epochs,
    dpo_lr: float = DPOConfig.lr,
    dpo_beta: float = DPOConfig.beta,
    dpo_loss_type: str = DPOConfig.loss_type,
    evaluate_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    deploy_name: str = DeployConfig.name,
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    dpo_overrides: dict = {},
    evaluate_overrides: dict = {},
    deploy_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
    deploy_enabled: bool = False,
):
    params = dict(locals())
    prep, sft = _prepare_and_sft(params)
    policy = _task(
        "dpo",
        params,
        data_source=prep.outputs["Output"],
        preferences=prep.outputs["preferences"],
        sft_model=sft.outputs["model"],
    )
    _evaluate_and_deploy(params, prep, sft, policy, None)


@dsl.pipeline(
    name="rlhf-grpo",
    description="RLHF with GRPO (no critic): prepare data -> supervised fine-tuning -> reward "
    "model -> GRPO -> evaluate.",
)
def grpo_pipeline(
    sft_data: list = [],
    preferences_data: list = [],
    prompts_data: list = [],
    eval_prompts_data: list = [],
    unpaired_data: list = [],
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    gold_reward: str = "auto",
    sft_base_model: str = SFTConfig.base_model,
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
    evaluate_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    deploy_name: str = DeployConfig.name,
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    reward_overrides: dict = {},
    grpo_overrides: dict = {},
    evaluate_overrides: dict = {},
    deploy_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
    deploy_enabled: bool = False,
):
    params = dict(locals())
    prep, sft = _prepare_and_sft(params)
    rm = _reward_model(params, prep, sft)
    policy = _task(
        "grpo",
        params,
        data_source=prep.outputs["Output"],
        prompts=prep.outputs["prompts"],
        sft_model=sft.outputs["model"],
        reward_model=rm.outputs["model"],
    )
    _evaluate_and_deploy(params, prep, sft, policy, rm)


@dsl.pipeline(
    name="rlhf-online-dpo",
    description="Online iterative DPO: prepare data -> supervised fine-tuning -> reward model "
    "-> rounds of sampling, ranking with the reward model and DPO -> evaluate.",
)
def online_dpo_pipeline(
    sft_data: list = [],
    preferences_data: list = [],
    prompts_data: list = [],
    eval_prompts_data: list = [],
    unpaired_data: list = [],
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    gold_reward: str = "auto",
    sft_base_model: str = SFTConfig.base_model,
    sft_epochs: int = SFTConfig.epochs,
    sft_lr: float = SFTConfig.lr,
    sft_batch_size: int = SFTConfig.batch_size,
    reward_epochs: int = RewardConfig.epochs,
    reward_lr: float = RewardConfig.lr,
    reward_batch_size: int = RewardConfig.batch_size,
    online_dpo_iterations: int = OnlineDPOConfig.iterations,
    online_dpo_lr: float = OnlineDPOConfig.lr,
    online_dpo_samples_per_prompt: int = OnlineDPOConfig.samples_per_prompt,
    online_dpo_beta: float = OnlineDPOConfig.beta,
    online_dpo_reference: str = OnlineDPOConfig.reference,
    evaluate_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    deploy_name: str = DeployConfig.name,
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    reward_overrides: dict = {},
    online_dpo_overrides: dict = {},
    evaluate_overrides: dict = {},
    deploy_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
    deploy_enabled: bool = False,
):
    params = dict(locals())
    prep, sft = _prepare_and_sft(params)
    rm = _reward_model(params, prep, sft)
    policy = _task(
        "online_dpo",
        params,
        data_source=prep.outputs["Output"],
        prompts=prep.outputs["prompts"],
        sft_model=sft.outputs["model"],
        reward_model=rm.outputs["model"],
    )
    _evaluate_and_deploy(params, prep, sft, policy, rm)


@dsl.pipeline(
    name="rlhf-collect",
    description="Candidates for human or AI feedback: prepare data -> supervised fine-tuning "
    "(or a given model) -> sample K answers per prompt into a labelling batch.",
)
def collect_pipeline(
    sft_data: list = [],
    preferences_data: list = [],
    prompts_data: list = [],
    eval_prompts_data: list = [],
    unpaired_data: list = [],
    model: str = "",
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    sft_base_model: str = SFTConfig.base_model,
    sft_epochs: int = SFTConfig.epochs,
    sft_lr: float = SFTConfig.lr,
    sft_batch_size: int = SFTConfig.batch_size,
    candidates_k: int = SampleConfig.k,
    candidates_temperature: float = SampleConfig.temperature,
    candidates_max_new_tokens: int = SampleConfig.max_new_tokens,
    prepare_overrides: dict = {},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    candidates_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
):
    params = dict(locals())
    prep = _task("prepare", params, demo_overrides=params["demo_overrides"])
    # Each branch samples with its own candidates task: kfp.local cannot merge the two branches'
    # model artifacts with dsl.OneOf (it fails on the artifact selector), so the If branch comes
    # first and keeps the task name `candidates` on the SFT path; the Else branch's task is
    # `candidates-2`.
    with dsl.If(params["model"] == "", name="train-sft"):
        sft = _task("sft", params, data=prep.outputs["sft"])
        _task("candidates", params, prompts=prep.outputs["prompts"], model=sft.outputs["model"])
    with dsl.Else(name="given-model"):
        # A Hugging Face model folder (local path or s3:// URI, e.g. a run's published
        # <publish_to>/<run>/policy) brought in as a Model artifact: on a cluster KFP's launcher
        # downloads it for the task like any other input artifact.
        given = dsl.importer(artifact_uri=params["model"], artifact_class=dsl.Model,
                             reimport=False)  # fmt: skip
        given.set_display_name("Given model")
        _task("candidates", params, prompts=prep.outputs["prompts"], model=given.output)


@dsl.pipeline(
    name="rlhf-kto",
    description="Preference optimisation on unpaired feedback (KTO, no reward model): prepare "
    "data -> supervised fine-tuning -> KTO -> evaluate.",
)
def kto_pipeline(
    sft_data: list = [],
    preferences_data: list = [],
    prompts_data: list = [],
    eval_prompts_data: list = [],
    unpaired_data: list = [],
    seed: int = SFTConfig.seed,
    max_length: int = SFTConfig.max_length,
    gold_reward: str = "auto",
    sft_base_model: str = SFTConfig.base_model,
    sft_epochs: int = SFTConfig.epochs,
    sft_lr: float = SFTConfig.lr,
    sft_batch_size: int = SFTConfig.batch_size,
    kto_epochs: int = KTOConfig.epochs,
    kto_lr: float = KTOConfig.lr,
    kto_beta: float = KTOConfig.beta,
    evaluate_samples_per_prompt: int = EvalConfig.samples_per_prompt,
    deploy_name: str = DeployConfig.name,
    # Preference pairs become unpaired feedback too (set it false for unpaired files alone).
    prepare_overrides: dict = {"unpaired_from_preferences": True},
    demo_overrides: dict = {},
    sft_overrides: dict = {},
    kto_overrides: dict = {},
    evaluate_overrides: dict = {},
    deploy_overrides: dict = {},
    pipeline_run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    mlflow_experiment: str = "rlhf",
    track: bool = True,
    publish_to: str = "",
    deploy_enabled: bool = False,
):
    params = dict(locals())
    prep, sft = _prepare_and_sft(params)
    policy = _task("kto", params, unpaired=prep.outputs["unpaired"], sft_model=sft.outputs["model"])
    _evaluate_and_deploy(params, prep, sft, policy, None)


PIPELINES = {
    "ppo": ppo_pipeline,
    "dpo": dpo_pipeline,
    "grpo": grpo_pipeline,
    "online_dpo": online_dpo_pipeline,
    "collect": collect_pipeline,
    "kto": kto_pipeline,
}


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
