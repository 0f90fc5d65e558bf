"""KFP lightweight components: thin adapters from typed artifacts to the stages.

Each body imports ``rlhf`` (installed in the image, or in the local venv) and hands its
arguments to ``rlhf.pipeline.adapters``. ``install_kfp_package=False`` because the image
already has kfp; locally it saves a pip install per task.

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
def prepare_data(
    sft_data: str,
    preference_data: str,
    prompt_data: str,
    eval_prompt_data: str,
    prepare_overrides: dict,
    demo_overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    sft: Output[Dataset],
    preferences: Output[Dataset],
    prompts: Output[Dataset],
    eval_prompts: Output[Dataset],
    rejects: Output[Artifact],
    metrics: Output[Metrics],
    publish_to: str = "",  # an s3:// root; "" publishes nothing
) -> str:
    """Validate, normalise, dedupe and split the data (or generate the demo task)."""
    arguments = dict(locals())  # before the import below adds a local
    from rlhf.pipeline import adapters

    return adapters.prepare(**arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def supervised_finetune(
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
    publish_to: str = "",  # an s3:// root; "" publishes nothing
):
    """Fine-tune the base model on demonstrations (response tokens only)."""
    arguments = dict(locals())
    from rlhf.pipeline import adapters

    adapters.sft(**arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def train_reward_model(
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
    publish_to: str = "",  # an s3:// root; "" publishes nothing
):
    """Train a scalar reward model on preference pairs, starting from the SFT model."""
    arguments = dict(locals())
    from rlhf.pipeline import adapters

    adapters.reward(**arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def ppo_train(
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
    sft_data: Input[Dataset],
    sft_model: Input[Model],
    reward_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    publish_to: str = "",  # an s3:// root; "" publishes nothing
):
    """Optimise the SFT policy against the reward model with PPO and a KL penalty."""
    arguments = dict(locals())
    from rlhf.pipeline import adapters

    adapters.ppo(**arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def dpo_train(
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
    publish_to: str = "",  # an s3:// root; "" publishes nothing
):
    """Optimise the SFT policy directly on preference pairs with DPO (no reward model)."""
    arguments = dict(locals())
    from rlhf.pipeline import adapters

    adapters.dpo(**arguments)


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def grpo_train(
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
    reward_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    publish_to: str = "",  # an s3:// root; "" publishes nothing
):
    """Optimise the SFT policy against the reward model with GRPO (group-relative, no critic)."""
    arguments = dict(locals())
    from rlhf.pipeline import adapters

    adapters.grpo(**arguments)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_policy(
    seed: int,
    samples_per_prompt: int,
    gold_reward: str,
    data_source: str,
    overrides: dict,
    pipeline_run: str,
    mlflow_experiment: str,
    track: bool,
    eval_prompts: Input[Dataset],
    sft_data: Input[Dataset],
    candidate: Input[Model],
    reference: Input[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
    reward_model: Input[Model] | None = None,
    publish_to: str = "",  # an s3:// root; "" publishes nothing
):
    """Compare the candidate policy with the reference on held-out prompts (judged by the
    reward model when one is given, and by the gold reward when there is one)."""
    arguments = dict(locals())
    from rlhf.pipeline import adapters

    adapters.evaluate(**arguments)
