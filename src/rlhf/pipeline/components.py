"""KFP lightweight components, one per stage, named as the stage.

KFP reads a component's interface from its Python signature, so each is written out here; a
test checks every signature against the stage's spec (``rlhf.stages.specs``): the named
parameters with the config's types, ``overrides`` for every other config field, the ports as
typed artifacts, and the context every task gets. Each body hands its arguments to
``rlhf.pipeline.component_runner`` (installed in the image, or in the local venv);
``install_kfp_package=False`` because the image already has kfp.

Each component is declared with its default image: the CPU image for data preparation and
evaluation, the CUDA image for training. ``rlhf compile`` writes every component here to its own
spec under components/, and the pipeline sets each task's image, resources and secrets from the
cluster config (``cluster.configure``).
"""

# No `from __future__ import annotations` here: KFP reads the real annotation objects.
from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from rlhf.pipeline.images import CPU_IMAGE, CUDA_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare(
    sft_data: list,
    preferences_data: list,
    prompts_data: list,
    eval_prompts_data: list,
    unpaired_data: list,
    overrides: dict,
    demo_overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    sft: Output[Dataset],
    preferences: Output[Dataset],
    prompts: Output[Dataset],
    eval_prompts: Output[Dataset],
    unpaired: Output[Dataset],
    rejects: Output[Artifact],
    metrics: Output[Metrics],
    publish_to: str = "",  # an s3:// root; "" publishes nothing
) -> str:
    """Validate, normalise, dedupe and split the data (or generate the demo task)."""
    arguments = dict(locals())  # before the import below adds a local
    from rlhf.pipeline.component_runner import run_component

    return run_component("prepare", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
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
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    publish_to: str = "",
):
    """Fine-tune the base model on demonstrations (response tokens only)."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("sft", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
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
    preferences: Input[Dataset],
    sft_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    publish_to: str = "",
):
    """Train a scalar reward model on preference pairs, starting from the SFT model."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("reward", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
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
    prompts: Input[Dataset],
    sft_model: Input[Model],
    reward_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    sft_data: Input[Dataset] | None = None,
    publish_to: str = "",
):
    """Optimise the SFT policy against the reward model with PPO and a KL penalty."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("ppo", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
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
    preferences: Input[Dataset],
    sft_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    publish_to: str = "",
):
    """Optimise the SFT policy directly on preference pairs with DPO (no reward model)."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("dpo", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def kto(
    seed: int,
    max_length: int,
    epochs: int,
    lr: float,
    beta: float,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    unpaired: Input[Dataset],
    sft_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    publish_to: str = "",
):
    """Optimise the SFT policy with KTO on answers labelled desirable or not (no reward model)."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("kto", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
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
    prompts: Input[Dataset],
    sft_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    reward_model: Input[Model] | None = None,
    publish_to: str = "",
):
    """Optimise the SFT policy against the reward model with GRPO (group-relative, no critic)."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("grpo", arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def online_dpo(
    seed: int,
    iterations: int,
    lr: float,
    samples_per_prompt: int,
    beta: float,
    reference: str,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    prompts: Input[Dataset],
    sft_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    reward_model: Input[Model] | None = None,
    publish_to: str = "",
):
    """Optimise the SFT policy with online iterative DPO: rounds of sampling answers, ranking
    them with the reward model (or a judge) and DPO on the best-vs-worst pairs."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("online_dpo", arguments)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    seed: int,
    samples_per_prompt: int,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    eval_prompts: Input[Dataset],
    candidate: Input[Model],
    reference: Input[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
    reward_model: Input[Model] | None = None,
    sft_data: Input[Dataset] | None = None,
    publish_to: str = "",
) -> bool:
    """Compare the candidate policy with the reference on held-out prompts (judged by the
    reward model when one is given, and by the gold reward when there is one). Returns whether
    the champion gate made it the champion (the deploy step runs on that)."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    return run_component("evaluate", arguments)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def deploy(
    name: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    service: Output[Artifact],
    metrics: Output[Metrics],
    publish_to: str = "",  # the run's policy is served from <publish_to>/<run>/policy
):
    """Serve the champion policy as a KServe InferenceService: create or update it, wait until
    it is ready, send a smoke request, roll back to the previous spec on a failure."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("deploy", arguments)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def candidates(
    seed: int,
    k: int,
    temperature: float,
    max_new_tokens: int,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    prompts: Input[Dataset],
    model: Input[Model],
    batch: Output[Dataset],
    metrics: Output[Metrics],
    publish_to: str = "",
):
    """Sample K distinct candidate answers per prompt from the model into a labelling batch
    (the labelling app imports it; `rlhf judge` labels it)."""
    arguments = dict(locals())
    from rlhf.pipeline.component_runner import run_component

    run_component("candidates", arguments)


# Every stage's component, by stage name (KFP spells a component's underscores as dashes).
COMPONENTS = {
    c.name.replace("-", "_"): c
    for c in (prepare, sft, reward, ppo, dpo, kto, grpo, online_dpo, evaluate, deploy, candidates)
}
