"""One declaration per stage: its name, config, inputs and outputs, entry point, the config
fields that are named pipeline parameters, where it publishes and how its pod is sized.

Everything else reads these specs: the stage subcommands of the CLI (``rlhf sft ...``), the one
component runner of the KFP components (``pipeline/component_runner.py``), ``rlhf run``'s
config mapping (``pipeline/run_config.py``), the cluster config's stage list
(``pipeline/cluster.py``) and the docs' tables of pipeline parameters (checked by tests). A stage
has one name everywhere: the CLI subcommand (its underscores spelt as dashes, as in the flags:
``rlhf online-dpo``), the config section, the component and its task, the cluster stage and
the ``<name>_overrides`` pipeline parameter.

A stage's inputs and outputs are the fields of its ``*Inputs``/``*Outputs`` dataclasses
(declared here, imported by the stage module): each field is a *port* whose metadata says what
it carries. The same field name is the CLI flag (``--sft-model``), the KFP component's
parameter and the stage's attribute.

This module stays light (no torch import): ``rlhf --help`` and pipeline compilation read it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config import (
    DeployConfig,
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    KTOConfig,
    OnlineDPOConfig,
    PPOConfig,
    PrepareConfig,
    RewardConfig,
    SampleConfig,
    SFTConfig,
)
from rlhf.console.stage_report import Headline

# What a port carries. "uris" is a list of files or folders (local or s3://), a plain
# parameter in KFP named "<port>_data" (the prepare stage's outputs take the bare names); the
# others are KFP artifacts of that type.
PORT_KINDS = ("uris", "dataset", "model", "html", "file")


def port(kind: str, help: str, *, required: bool = True, in_pipeline: bool = True) -> Any:
    """A dataclass field declaring an input or output of a stage. ``required=False`` gives it a
    default (None, or [] for ``uris``); ``in_pipeline=False`` keeps it out of the KFP component
    (a CLI-only port)."""
    if kind not in PORT_KINDS:
        raise ValueError(f"unknown port kind {kind!r}; known: {PORT_KINDS}")
    metadata = {"kind": kind, "help": help, "in_pipeline": in_pipeline}
    if kind == "uris":
        return field(default_factory=list, metadata=metadata)
    if not required:
        return field(default=None, metadata=metadata)
    return field(metadata=metadata)


@dataclass(frozen=True)
class Port:
    name: str
    kind: str
    help: str
    required: bool
    in_pipeline: bool


def uris_parameter(port_name: str) -> str:
    """The KFP parameter (of the component and the pipeline) a "uris" port is given as."""
    return f"{port_name}_data"


def ports(cls: type) -> list[Port]:
    """The ports of an ``*Inputs`` or ``*Outputs`` dataclass, in declaration order."""
    return [
        Port(
            f.name,
            f.metadata["kind"],
            f.metadata["help"],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            f.metadata["in_pipeline"],
        )
        for f in dataclasses.fields(cls)
    ]


# --- inputs and outputs ------------------------------------------------------------------------

# The artifacts the prepare stage writes, in order.
ARTIFACTS = ("sft", "preferences", "prompts", "eval_prompts", "unpaired")


@dataclass
class PrepareInputs:
    """Input URIs (local paths or s3://) per artifact; each list may hold several files."""

    sft: list[str] = port("uris", "SFT demonstrations: file, folder or URI")
    preferences: list[str] = port("uris", "preference pairs or rankings")
    prompts: list[str] = port("uris", "prompts for RL")
    eval_prompts: list[str] = port("uris", "held-out evaluation prompts")
    unpaired: list[str] = port("uris", "unpaired feedback: answers labelled desirable or not")


@dataclass
class PrepareOutputs:
    """Where the artifacts go: four folders and the rejects file (JSON lines)."""

    sft: str = port("dataset", "prepared SFT artifact")
    preferences: str = port("dataset", "prepared preferences artifact")
    prompts: str = port("dataset", "prepared prompts artifact")
    eval_prompts: str = port("dataset", "prepared evaluation prompts artifact")
    unpaired: str = port("dataset", "prepared unpaired feedback artifact")
    rejects: str = port("file", "rejected rows (JSON lines) with their errors")

    @classmethod
    def in_folder(cls, out: str | Path) -> PrepareOutputs:
        """The standard layout: ``out/sft``, ..., ``out/unpaired``, ``out/rejects.jsonl``."""
        out = Path(out)
        return cls(*(str(out / name) for name in ARTIFACTS), rejects=str(out / "rejects.jsonl"))


@dataclass
class ModelOutputs:
    """The output of every training stage: one model folder (with its tokenizer)."""

    model: str = port("model", "the model folder")

    @classmethod
    def in_folder(cls, out: str | Path) -> ModelOutputs:
        return cls(str(out))


@dataclass
class SFTInputs:
    data: str = port("dataset", "prepared sft artifact (folder or s3:// URI)")


@dataclass
class RewardInputs:
    preferences: str = port("dataset", "prepared preferences artifact")
    sft_model: str = port("model", "model to start from: the SFT model (or any causal LM)")


@dataclass
class PPOInputs:
    prompts: str = port("dataset", "prepared prompts artifact")
    sft_model: str = port("model", "SFT model: policy initialisation and frozen reference")
    reward_model: str = port("model", "frozen reward model (and the critic's default start)")
    sft_data: str | None = port("dataset", "prepared sft artifact (PPO-ptx)", required=False)


@dataclass
class DPOInputs:
    preferences: str = port("dataset", "prepared preferences artifact")
    sft_model: str = port("model", "SFT model: policy initialisation and frozen reference")


@dataclass
class KTOInputs:
    unpaired: str = port("dataset", "prepared unpaired artifact (answers labelled true/false)")
    sft_model: str = port("model", "SFT model: policy initialisation and frozen reference")


@dataclass
class GRPOInputs:
    prompts: str = port("dataset", "prepared prompts artifact")
    sft_model: str = port("model", "SFT model: policy initialisation and frozen reference")
    reward_model: str | None = port(
        "model", "frozen reward model (not needed with reward_function set)", required=False
    )


@dataclass
class OnlineDPOInputs:
    prompts: str = port("dataset", "prepared prompts artifact")
    sft_model: str = port("model", "SFT model: policy initialisation and DPO's reference")
    reward_model: str | None = port(
        "model", "frozen reward model ranking answers (not needed with judge set)", required=False
    )


@dataclass
class EvalInputs:
    eval_prompts: str = port("dataset", "prepared eval_prompts artifact (its test split)")
    candidate: str = port("model", "the policy to evaluate (e.g. the PPO model)")
    reference: str = port("model", "the policy to compare with (the SFT model)")
    reward_model: str | None = port(
        "model", "reward model judging both (without: gold, KL, length only)", required=False
    )
    sft_data: str | None = port(
        "dataset", "prepared sft artifact: perplexity on its validation split", required=False
    )
    # Ranked by Elo alongside candidate and reference; each is named by its folder's name
    # (made unique, and never "candidate" or "reference").
    others: list[str] = port("uris", "more policies to rank by Elo", in_pipeline=False)


@dataclass
class EvalOutputs:
    report: str = port("html", "HTML report (its folder goes to the tracker)")
    metrics: str | None = port(
        "file", "JSON file of the flat metrics", required=False, in_pipeline=False
    )

    @classmethod
    def in_folder(cls, out: str | Path) -> EvalOutputs:
        return cls(str(Path(out) / "report.html"), str(Path(out) / "metrics.json"))


@dataclass
class DeployInputs:
    """Nothing to read: the policy is served from its published folder (``storage_uri``)."""


@dataclass
class DeployOutputs:
    service: str = port("file", "the InferenceService as applied (YAML)")

    @classmethod
    def in_folder(cls, out: str | Path) -> DeployOutputs:
        return cls(str(Path(out) / "inferenceservice.yaml"))


@dataclass
class SampleInputs:
    prompts: str = port(
        "dataset", "prompts: a prepared prompts artifact, or any prompts file prepare reads"
    )
    model: str = port("model", "the model to sample from (e.g. the SFT model)")
    # `rlhf label sample --model A --model B`: the first is `model`, the others these.
    more_models: list[str] = port("uris", "more models to sample from", in_pipeline=False)


@dataclass
class BatchOutputs:
    batch: str = port("dataset", "the labelling batch (candidates.jsonl and its manifest)")

    @classmethod
    def in_folder(cls, out: str | Path) -> BatchOutputs:
        return cls(str(out))  # kept as given: an s3:// URI is a destination too


# --- the specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    name: str  # the one name: subcommand, config section, component, cluster stage
    title: str  # how the UI and the console name it
    help: str  # one line for `rlhf --help`
    config: type  # the settings dataclass (config.py)
    inputs: type  # *Inputs dataclass: its fields are the input ports
    outputs: type  # *Outputs dataclass with in_folder(out) for the CLI's --out
    entry: str  # "module:function" called as run(config, inputs, outputs, tracker)
    output_label: str  # what the CLI prints before the output path
    # Config fields that are named pipeline parameters (visible in the KFP UI). Each is the
    # pipeline parameter "<stage>_<field>", except the SHARED_PARAMETERS, one for every stage.
    parameters: tuple[str, ...] = ()
    publish_folder: str = ""  # under the pipeline's publish_to root, per pipeline run
    gpu: bool = False  # on a cluster: a training pod (CUDA image, a GPU) or a CPU pod
    cluster: dict[str, Any] = field(default_factory=dict)  # StageResources fields it changes
    # Config fields that also get a CLI flag of their own (besides --set).
    cli_flags: tuple[str, ...] = ()
    # The metrics its summary line shows when it ends (those it reported, in this order).
    summary: tuple[Headline, ...] = ()
    # The config field the publish destination (<publish_to>/<run>/<publish_folder>) goes to:
    # where the stage publishes, or (deploy) the published folder it reads.
    publish_field: str = "publish_to"
    # A metric whose truth the component returns (its KFP output "Output", a bool), for later
    # tasks to run on a condition: the evaluation's "gate/promoted".
    returns_metric: str = ""
    # An optional last step of the pipelines, run when the pipeline parameter "<name>_enabled"
    # (default False; the cluster config's `deploy: true` compiles it in as True) is on.
    optional: bool = False
    # Its cluster settings size what the stage starts (the InferenceService's predictor), not
    # its own pod: a small CPU launcher, as a multi-node stage's task is.
    launcher: bool = False
    # The command that runs it when that is not `rlhf <name>` (the labelling stages live under
    # `rlhf label`); the stage commands leave such a stage to its own command.
    command: str = ""

    def load_run(self) -> Callable[..., dict[str, float]]:
        module, _, function = self.entry.partition(":")
        return getattr(importlib.import_module(module), function)

    @property
    def task_name(self) -> str:
        """Its KFP component's and task's name, and the task's output folder: KFP spells the
        name's underscores as dashes (``online-dpo``)."""
        return self.name.replace("_", "-")

    @property
    def uses_gold_reward(self) -> bool:
        """Stages with a ``gold_reward`` field get the pipeline's one ``gold_reward``."""
        return any(f.name == "gold_reward" for f in dataclasses.fields(self.config))


# Named pipeline parameters that every stage having the field reads from one parameter.
SHARED_PARAMETERS = ("seed", "max_length", "gold_reward")


def pipeline_parameter(stage: str, config_field: str) -> str:
    """The pipeline parameter a stage's named config field is set from."""
    return config_field if config_field in SHARED_PARAMETERS else f"{stage}_{config_field}"


_RL_SUMMARY = (
    Headline("score", "score_mean", "score_start"),  # the RM's, or the reward_function's
    Headline("gold", "gold_mean", "gold_start"),
    Headline("KL", "kl_mean"),
)
_POLICY_STAGE = dict(gpu=True, publish_folder="policy", output_label="policy")

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "prepare", "prepare data", "validate, deduplicate and split the data",
            PrepareConfig, PrepareInputs, PrepareOutputs, "rlhf.stages.prepare:run",
            output_label="prepared data", publish_folder="data",
            # The same data and settings give the same artifacts: cached on a cluster.
            cluster=dict(cpu_request="2", memory_request="8Gi", memory_limit="16Gi",
                         timeout_seconds=2 * 3600, retries=1, caching=True),
            cli_flags=("skip_invalid", "format"),
            summary=(
                Headline("sft rows", "sft/train_rows", fmt=".0f"),
                Headline("preference pairs", "preferences/train_rows", fmt=".0f"),
                Headline("prompts", "prompts/train_rows", fmt=".0f"),
                Headline("eval prompts", "eval_prompts/test_rows", fmt=".0f"),
                Headline("rejected", "total/rejected", fmt=".0f"),
            ),
        ),
        StageSpec(
            "sft", "supervised fine-tuning", "supervised fine-tuning",
            SFTConfig, SFTInputs, ModelOutputs, "rlhf.stages.sft:run",
            output_label="SFT model", publish_folder="sft", gpu=True,
            parameters=("base_model", "seed", "max_length", "epochs", "lr", "batch_size"),
            summary=(Headline("val loss", "val_loss", "val_loss_start"),),
        ),
        StageSpec(
            "reward", "reward model", "train a reward model on preference pairs",
            RewardConfig, RewardInputs, ModelOutputs, "rlhf.stages.reward:run",
            output_label="reward model", publish_folder="reward_model", gpu=True,
            parameters=("seed", "max_length", "epochs", "lr", "batch_size", "gold_reward"),
            summary=(
                Headline("val accuracy", "accuracy", fmt=".1%"),
                Headline("gold accuracy", "gold_accuracy", fmt=".1%"),
            ),
        ),
        StageSpec(
            "ppo", "PPO", "PPO against the reward model with a KL penalty to SFT",
            PPOConfig, PPOInputs, ModelOutputs, "rlhf.stages.ppo:run",
            parameters=("seed", "iterations", "lr", "kl_coef", "kl_target", "gold_reward"),
            summary=_RL_SUMMARY,
            **_POLICY_STAGE,
        ),
        StageSpec(
            "dpo", "DPO", "direct preference optimisation of the SFT model (no RM)",
            DPOConfig, DPOInputs, ModelOutputs, "rlhf.stages.dpo:run",
            parameters=("seed", "max_length", "epochs", "lr", "beta", "loss_type",
                        "gold_reward"),
            summary=(
                Headline("val accuracy", "rewards_accuracy", "accuracy_start", fmt=".1%"),
                Headline("gold accuracy", "rewards_gold_accuracy", fmt=".1%"),
                Headline("margin", "rewards_margin"),
            ),
            **_POLICY_STAGE,
        ),
        StageSpec(
            "kto", "KTO", "KTO on unpaired feedback (desirable or not), no RM",
            KTOConfig, KTOInputs, ModelOutputs, "rlhf.stages.kto:run",
            parameters=("seed", "max_length", "epochs", "lr", "beta"),
            summary=(
                Headline("val margin", "rewards_margin"),
                Headline("val accuracy", "rewards_accuracy", "accuracy_start", fmt=".1%"),
                Headline("KL", "kl"),
            ),
            **_POLICY_STAGE,
        ),
        StageSpec(
            "grpo", "GRPO", "GRPO: group-relative RL against the RM, no critic",
            GRPOConfig, GRPOInputs, ModelOutputs, "rlhf.stages.grpo:run",
            parameters=("seed", "iterations", "lr", "group_size", "kl_coef", "gold_reward"),
            summary=_RL_SUMMARY,
            **_POLICY_STAGE,
        ),
        StageSpec(
            "online_dpo", "online DPO",
            "online iterative DPO: sample, rank with the RM, DPO on the pairs, repeat",
            OnlineDPOConfig, OnlineDPOInputs, ModelOutputs, "rlhf.stages.online_dpo:run",
            parameters=("seed", "iterations", "lr", "samples_per_prompt", "beta", "reference",
                        "gold_reward"),
            summary=_RL_SUMMARY,
            **_POLICY_STAGE,
        ),
        StageSpec(
            "evaluate", "evaluate", "compare a policy with the reference on held-out prompts",
            EvalConfig, EvalInputs, EvalOutputs, "rlhf.stages.evaluate:run",
            output_label="report", publish_folder="evaluate",
            parameters=("seed", "samples_per_prompt", "gold_reward"),
            cluster=dict(cpu_request="4", memory_request="16Gi", memory_limit="32Gi",
                         shm_size="4Gi", timeout_seconds=6 * 3600),
            summary=(
                Headline("gold win rate", "win_rate_gold", fmt=".1%"),
                Headline("RM win rate", "win_rate_rm", fmt=".1%"),
                Headline("KL", "kl_candidate_reference"),
            ),
            returns_metric="gate/promoted",
        ),
        StageSpec(
            "deploy", "deploy", "serve the champion policy as a KServe InferenceService",
            DeployConfig, DeployInputs, DeployOutputs, "rlhf.pipeline.deploy:run",
            output_label="InferenceService", publish_folder="policy", publish_field="storage_uri",
            parameters=("name",), optional=True, launcher=True,
            # The predictor: one GPU (vLLM), tolerating GPU taints; the task waits up to an hour.
            cluster=dict(accelerator_type="nvidia.com/gpu", gpus=1, cpu_request="4",
                         memory_request="16Gi", memory_limit="32Gi", timeout_seconds=3600,
                         tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                       "effect": "NoSchedule"}]),
            cli_flags=("storage_uri",),
            summary=(
                Headline("seconds to ready", "ready_seconds", fmt=".0f"),
                Headline("smoke request seconds", "smoke_seconds", fmt=".2f"),
            ),
        ),
        StageSpec(
            "candidates", "sample candidates", "sample K answers per prompt to label",
            SampleConfig, SampleInputs, BatchOutputs, "rlhf.labelling.candidates_stage:run",
            output_label="labelling batch", publish_folder="candidates",
            parameters=("seed", "k", "temperature", "max_new_tokens"),
            cluster=dict(cpu_request="4", memory_request="16Gi", memory_limit="32Gi",
                         shm_size="4Gi", timeout_seconds=6 * 3600),
            command="label sample",
            summary=(
                Headline("tasks", "tasks", fmt=".0f"),
                Headline("candidates", "candidates", fmt=".0f"),
                Headline("redrawn", "redrawn", fmt=".0f"),
                Headline("dropped", "tasks_dropped", fmt=".0f"),
            ),
        ),
    )
}  # fmt: skip


def get_stage(name: str) -> StageSpec:
    """The spec of stage ``name``, or a clear error listing the known ones."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {sorted(STAGES)}")
    return STAGES[name]
