"""One typed config per stage, loaded from YAML with ``--set key=value`` overrides.

Every field has a default that works for the built-in demo task; the docstring of each class
says what the fields are for (docs/configuration.md lists them all).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")

# The values the choice fields allow (the code that acts on them imports these).
DTYPES = ("float32", "bfloat16", "float16")
LR_SCHEDULES = ("constant", "linear")  # on-policy LR after warmup
REWARD_HEADS = ("log_ratio", "scalar")
POOLINGS = ("last", "sum", "mean")  # how a scalar reward head's outputs become one score
DPO_LOSSES = ("sigmoid", "ipo", "simpo", "orpo")
REFERENCE_FREE_LOSSES = ("simpo", "orpo")  # DPO losses that need no reference model
ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp")  # the GRPO stage's estimator
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_CONTROLS = ("fixed", "adaptive")
POLICY_LOSSES = ("clip", "penalty")
CRITIC_INITS = ("reward", "policy")
OVER_BUDGET_MODES = ("drop", "truncate")  # prepare: rows over max_tokens
GATE_JUDGES = ("auto", "gold", "reward_model")  # evaluate: what judges the champion gate
PRECISIONS = ("fp32", "bf16", "fp16")  # training compute; master weights stay fp32
ZERO_STAGES = (0, 1, 2, 3)
LORA_PUBLISH = ("merged", "adapter")
PAIR_SELECTIONS = ("best_worst", "all")  # online DPO: which pairs a prompt's K answers give
ONLINE_DPO_REFERENCES = ("sft", "previous_round")  # online DPO: what DPO's reference is
ROLLOUT_BACKENDS = ("auto", "torch", "vllm")  # on-policy stages: what samples the rollouts
ROLLOUT_WEIGHTS = ("auto", "copy", "policy")  # what the torch decode loop samples from


class _Checks:
    """Collects what is wrong with a config's values; each message names the field, says
    what it allows and what it got. :meth:`raise_any` raises them all in one ValueError,
    from ``__post_init__``: a bad value fails when the config is built, before any model
    loads."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.problems: list[str] = []

    def one_of(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self.config, name)
        if value not in allowed:
            self.problems.append(f"{name} must be one of {allowed}, got {value!r}")

    def holds(self, ok: bool, name: str, rule: str) -> None:
        """``rule`` says what ``name`` must be, as in "must be >= 1"."""
        if not ok:
            self.problems.append(f"{name} {rule}, got {getattr(self.config, name)!r}")

    def raise_any(self) -> None:
        if self.problems:
            raise ValueError(f"{type(self.config).__name__}: " + "; ".join(self.problems))


class Checked:
    """Base of the configs that check their values: ``__post_init__`` collects what
    ``_check`` finds wrong and raises it all at once, when the config is built."""

    def __post_init__(self) -> None:
        checks = _Checks(self)
        self._check(checks)
        checks.raise_any()

    def _check(self, c: _Checks) -> None:
        """Add what is wrong to ``c``; subclasses extend it."""


@dataclasses.dataclass
class PrepareConfig(Checked):
    """Data preparation: validation, normalisation, dedup, split, token budget."""

    seed: int = 0  # drives the train/validation split
    validation_fraction: float = 0.1  # share of each artifact held out as the validation split
    skip_invalid: bool = (
        False  # drop bad rows (counted, listed in rejects.jsonl) instead of failing
    )
    format: str | None = None  # force one input format for every file; None detects per file
    dedupe: bool = True  # drop exact duplicate rows (counted)
    max_tokens: int = 1024  # budget per example (prompt + longest answer)
    over_budget: str = "drop"  # "drop" or "truncate" rows over max_tokens (counted either way)
    # Tokenizer used to count tokens (path, s3:// or hub id). None counts UTF-8 bytes, an upper
    # bound on the token count of any byte-level BPE tokenizer.
    tokenizer: str | None = None
    # Also publish the four artifacts to <publish_to>/<artifact> (an s3:// prefix or a folder).
    publish_to: str | None = None
    # Accept an input with no rows (an empty file, a CSV header alone, ...) or whose rows are all
    # rejected or dropped, writing an empty artifact; by default that is an error.
    allow_empty: bool = False
    # Also split every preference pair into two unpaired rows (chosen: label true, rejected:
    # false) in the same split of the unpaired artifact, after any unpaired input files' rows:
    # KTO's data from preference data.
    unpaired_from_preferences: bool = False

    def _check(self, c: _Checks) -> None:  # before any file is read
        c.one_of("over_budget", OVER_BUDGET_MODES)
        c.holds(0 <= self.validation_fraction < 1, "validation_fraction", "must be in [0, 1)")
        c.holds(self.max_tokens >= 1, "max_tokens", "must be >= 1")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Turn a YAML or command-line value into the field's declared type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], name)
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        return [_coerce(v, inner, name) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"config field {name!r}: expected true/false, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"config field {name!r}: expected a mapping of fields, got {value!r}")
        return from_dict(tp, value, where=name)
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"config field {name!r}: expected {tp.__name__}, got {value!r}"
            ) from None
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build ``cls`` from a mapping, rejecting unknown keys with the list of known ones."""
    hints = typing.get_type_hints(cls)
    data = _nest_dotted(data)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(known)}"
        )
    return cls(**{k: _coerce(v, hints[k], k) for k, v in data.items()})


def _nest_dotted(data: dict[str, Any]) -> dict[str, Any]:
    """``{"lora.r": 8}`` -> ``{"lora": {"r": 8}}``, merged into what ``data["lora"]`` holds."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        head, dot, rest = key.partition(".")
        if not dot:
            out[key] = value
            continue
        inner = out.setdefault(head, {})
        if not isinstance(inner, dict):
            raise ValueError(f"config field {head!r} has no fields; cannot set {key!r}")
        inner[rest] = value
    # One level only: a nested dataclass nests its own keys when from_dict builds it, and a
    # mapping field keeps its keys as written (node_selector: {"nvidia.com/gpu.product": ...}).
    return out


def flat_dict(config: Any) -> dict[str, Any]:
    """The config's fields, nested ones as ``"distributed.zero_stage"``: for params and logs."""
    out: dict[str, Any] = {}
    for key, value in to_dict(config).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """``["lr=1e-4", "epochs=2"]`` -> ``{"lr": "1e-4", "epochs": "2"}``."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    section: str | None = None,
) -> C:
    """Read ``cls`` from a YAML file (optionally one top-level ``section`` of it), then apply
    ``overrides``. Missing fields keep their defaults."""
    data: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        if section is not None:
            if section not in loaded and loaded:
                raise ValueError(
                    f"{path}: no '{section}:' section; this command reads its fields from there "
                    f"(found {sorted(loaded)})"
                )
            loaded = loaded.get(section) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        data.update(loaded)
    data.update(overrides or {})
    return from_dict(cls, data, where=str(path or "config"))


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


@dataclasses.dataclass
class DemoConfig:
    """The built-in demo task (shopping lists from recipes); see docs/demo-task.md."""

    seed: int = 0
    sft_rows: int = 10000  # SFT demonstrations (a mix of good and flawed answers)
    preference_rows: int = 30000  # labelled preference pairs
    prompt_rows: int = 1000  # prompts for RL
    eval_prompt_rows: int = 200  # held-out prompts for evaluation (with reference answers)
    sft_good_fraction: float = 0.5  # share of flawless demonstrations; the rest carry a flaw
    # Bradley-Terry temperature for labelling pairs from the gold reward: P(a > b) =
    # sigmoid((gold(a) - gold(b)) / T). InstructGPT's ~73% is agreement *between* two
    # labellers; two labellers who each agree with the truth with probability p agree with
    # each other p^2 + (1-p)^2 of the time, so 73% means p ~ 0.84. The default gives 84.3%
    # agreement with the noise-free order (73.5% between two simulated labellers). 0: no noise.
    label_temperature: float = 0.27


@dataclasses.dataclass
class DistributedConfig(Checked):
    """How a training stage spreads over processes and devices, and at what precision
    (docs/scaling.md). The same fields for every training stage, under ``distributed:``."""

    # None: plain PyTorch, wrapped in DistributedDataParallel when torchrun starts several
    # ranks. 0-3: DeepSpeed (the ``deepspeed`` extra) with that ZeRO stage: 1 shards the
    # optimizer state across ranks, 2 also the gradients, 3 also the weights.
    zero_stage: int | None = None
    offload_optimizer: bool = False  # ZeRO 1-3: optimizer state in CPU memory, stepped there
    offload_params: bool = False  # ZeRO 3: weights in CPU memory between uses
    # "fp32", or "bf16"/"fp16" compute with fp32 master weights: autocast on plain PyTorch,
    # DeepSpeed's mixed precision under ZeRO. fp16 scales the loss dynamically.
    precision: str = "fp32"
    # Recompute activations in the backward pass: less memory for about a third more compute.
    gradient_checkpointing: bool = False
    # A collective (all-reduce, barrier) that waits longer than this fails, so a rank that died
    # or hangs stops every rank with an error instead of a hang.
    timeout_minutes: float = 30.0

    def _check(self, c: _Checks) -> None:
        c.holds(
            self.zero_stage is None or self.zero_stage in ZERO_STAGES,
            "zero_stage",
            "must be None (plain PyTorch) or a ZeRO stage 0-3",
        )
        c.one_of("precision", PRECISIONS)
        c.holds(
            not self.offload_optimizer or (self.zero_stage or 0) >= 1,
            "offload_optimizer",
            "needs zero_stage 1, 2 or 3",
        )
        c.holds(not self.offload_params or self.zero_stage == 3, "offload_params",
                "needs zero_stage 3")  # fmt: skip
        c.holds(self.timeout_minutes > 0, "timeout_minutes", "must be > 0")


@dataclasses.dataclass
class LoraConfig(Checked):
    """Low-rank adapters (LoRA, through peft) instead of training every weight; under
    ``lora:`` in every training stage (docs/scaling.md)."""

    r: int = 0  # rank of the adapters; 0 trains every weight (no LoRA)
    alpha: float = 16.0  # adapters' output is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapters' input
    # Module names (or name suffixes) that get adapters; "all-linear": every linear layer but
    # the output head.
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["all-linear"])
    # The published folder: the "merged" model (plain transformers loads it) or the "adapter"
    # alone (peft loads it on top of the base model, which the manifest names).
    publish: str = "merged"
    # QLoRA: the frozen base weights in 4-bit (bitsandbytes NF4); CUDA only.
    quantize_4bit: bool = False

    def _check(self, c: _Checks) -> None:
        c.holds(self.r >= 0, "r", "must be >= 0 (0: no LoRA)")
        c.holds(self.alpha > 0, "alpha", "must be > 0")
        c.holds(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        c.holds(bool(self.target_modules), "target_modules", "must name at least one module")
        c.one_of("publish", LORA_PUBLISH)
        c.holds(not self.quantize_4bit or self.r > 0, "quantize_4bit", "needs LoRA (r > 0)")
        c.holds(
            not self.quantize_4bit or self.publish == "adapter",
            "publish",
            "must be 'adapter' with quantize_4bit (merging into 4-bit weights gives no plain model)",
        )


@dataclasses.dataclass
class ScaleSettings(Checked):
    """The settings every training stage shares for scaling out: ``distributed:`` and ``lora:``."""

    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        # A config rebuilt from its own dict (``to_dict``, a JSON file) gets its sections back.
        if isinstance(self.distributed, dict):
            self.distributed = from_dict(DistributedConfig, self.distributed, "distributed")
        if isinstance(self.lora, dict):
            self.lora = from_dict(LoraConfig, self.lora, "lora")
        super().__post_init__()

    def _check(self, c: _Checks) -> None:
        c.holds(
            not (self.lora.quantize_4bit and self.distributed.zero_stage == 3),
            "lora",
            "quantize_4bit cannot be combined with distributed.zero_stage 3 (4-bit weights are "
            "not partitioned): use ZeRO 0-2, or zero_stage null, with QLoRA",
        )


@dataclasses.dataclass
class TrainConfig(ScaleSettings):
    """Optimisation settings shared by the training stages."""

    seed: int = 0  # initialisation, batch order and dropout
    epochs: int = 3  # passes over the training split
    max_steps: int = -1  # stop after this many optimizer steps (-1: run all epochs)
    batch_size: int = 32  # sequences (SFT) or pairs (reward) per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW decay, not applied to biases and norms
    warmup_ratio: float = 0.05  # share of steps spent warming the LR up linearly from 0
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # gradient clipping (<= 0 turns it off)
    max_length: int = 256  # tokens per sequence; longer ones are truncated
    chat_template: bool = True  # render prompts with the tokenizer's chat template
    log_every: int = 10  # optimizer steps between metric logs
    eval_every: int = 100  # optimizer steps between validation passes (0: only at the end)
    eval_batch_size: int = 64
    checkpoint_every: int = 50  # optimizer steps between checkpoints (0: never)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    # Where checkpoints go (a persistent volume or folder). None: beside the output, as
    # "<output>.checkpoints". A rerun with the same folder resumes from the newest one.
    checkpoint_dir: str | None = None
    dtype: str = "float32"  # float32, bfloat16 (GPUs from Ampere on) or float16
    device: str = "auto"  # auto picks cuda when available
    trust_remote_code: bool = False  # only for model code you have read
    log_model_artifacts: bool = True  # also copy the output model folder into MLflow
    # Also publish the output to this s3:// prefix (or folder): objects first, manifest.json
    # last. None: the output stays where the stage wrote it.
    publish_to: str | None = None

    def _check(self, c: _Checks) -> None:  # before any model loads
        super()._check(c)
        c.holds(self.epochs >= 0, "epochs", "must be >= 0")
        c.holds(self.epochs > 0 or self.max_steps > 0, "max_steps", "must be > 0 when epochs is 0")
        for name in ("batch_size", "grad_accum", "max_length", "log_every", "eval_batch_size"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.holds(self.lr > 0, "lr", "must be > 0")
        c.holds(0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
        c.holds(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        c.holds(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        for name in ("eval_every", "checkpoint_every", "keep_checkpoints"):
            c.holds(getattr(self, name) >= 0, name, "must be >= 0 (0: never)")
        c.one_of("dtype", DTYPES)


@dataclasses.dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on demonstrations; the loss counts response tokens only."""

    # A folder, s3:// URI or hub id, or "preset:<name>" to build a small model from scratch.
    base_model: str = "preset:tiny-llama"
    # Tokenizer to use; None takes the base model's. A preset with no tokenizer trains a
    # byte-level BPE of ``vocab_size`` on the SFT training text.
    tokenizer: str | None = None
    vocab_size: int = 512
    # A model trained from scratch needs many passes; for a pretrained base model use 1-3
    # epochs and a learning rate around 1e-5 to 2e-5.
    epochs: int = 10
    lr: float = 2e-3


@dataclasses.dataclass
class RewardConfig(TrainConfig):
    """Reward model trained on preference pairs with the Bradley-Terry loss
    -log sigmoid(r_w - r_l [- margin]); ``head`` says how an answer's reward r is computed."""

    # "log_ratio": r = beta * (log pi(y|x) - log ref(y|x)), the model's own language-model head
    # against the frozen base model it starts from (the implicit reward of DPO). Every answer
    # token is scored by how much more likely the model finds it than the base model did, so a
    # wrong or repeated item is judged where it stands, against what the prompt makes
    # plausible there. "scalar": a linear head on the hidden states, read as ``pooling`` says.
    # On the demo log_ratio judges the SFT model's answers far better (docs/results.md).
    head: str = "log_ratio"
    beta: float = 0.3  # log_ratio: scale of the reward (and strength of the implicit anchor)
    epochs: int = 1
    lr: float = 1e-4  # log_ratio; the scalar head measured best at 5e-4 with 2 epochs
    warmup_ratio: float = 0.1
    use_margin: bool = True  # use the pairs' margin (when present) in the loss
    # scalar head: leave the closing EOS off (False) or keep it (True): with pooling "last" the
    # score is then read at the answer's last token (where the SFT model decides whether the
    # answer is complete, a better start) or at the EOS; with "sum"/"mean" the EOS counts or
    # not. (log_ratio always scores the EOS: it is the model's decision to stop.)
    score_at_eos: bool = False
    # scalar head: how its outputs become one score: "sum" over the answer's tokens (each
    # token carries its share, so a wrong item lowers the score where it stands), "mean", or
    # "last" (read at one position, as score_at_eos says). On the demo "sum" judges the gold
    # order better than "last" (81% vs 77%; docs/results.md).
    pooling: str = "sum"
    # Import path "module:function(prompt, response) -> float" of a programmatic gold reward;
    # when set, validation also reports accuracy against its noise-free ordering.
    gold_reward: str | None = None

    @property
    def scores_eos(self) -> bool:
        """Whether answers are scored with their closing EOS: as ``score_at_eos`` says for the
        scalar head, always for log_ratio (stopping is part of the answer)."""
        return self.score_at_eos or self.head == "log_ratio"

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.one_of("head", REWARD_HEADS)
        c.one_of("pooling", POOLINGS)
        if self.head == "log_ratio":
            c.holds(self.beta > 0, "beta", "must be > 0 (the log_ratio head's scale)")


@dataclasses.dataclass
class DPOConfig(TrainConfig):
    """Direct preference optimisation on preference pairs: the policy starts from the SFT
    model, which is also the frozen reference (docs/algorithms.md explains the choices)."""

    epochs: int = 1
    batch_size: int = 32  # preference pairs per micro-batch
    lr: float = 1e-4  # on the demo: 3e-5 gains less (docs/results.md)
    warmup_ratio: float = 0.1
    # Implicit KL strength: larger keeps the policy closer to the reference. On the demo's
    # 30000 pairs 0.1 drifts to a KL of 3.4 and loses gold reward; 0.3 stays near 0.5.
    beta: float = 0.3
    # "sigmoid" (DPO, or cDPO with label_smoothing), "ipo", or the reference-free "simpo" and
    # "orpo" (no reference model is loaded, no reference log-probs computed).
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0  # cDPO: assumed probability that a label is flipped
    # SimPO: target margin between the length-normalised rewards beta * log pi(y|x) / |y| (its
    # paper pairs beta 2-2.5 with gamma about beta / 2; set beta yourself: 0.3 is DPO's).
    simpo_gamma: float = 1.0
    orpo_lambda: float = 0.1  # ORPO: weight of the odds-ratio term added to the chosen NLL
    # Import path "module:function(prompt, response) -> float" of a programmatic gold reward;
    # when set, validation also reports the implicit reward's agreement with its order.
    gold_reward: str | None = None

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.one_of("loss_type", DPO_LOSSES)
        c.holds(self.beta > 0, "beta", "must be > 0")
        c.holds(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        c.holds(
            self.loss_type == "sigmoid" or self.label_smoothing == 0,
            "label_smoothing",
            f"(cDPO) applies to loss_type 'sigmoid' only: must be 0 with {self.loss_type!r}",
        )
        c.holds(self.simpo_gamma >= 0, "simpo_gamma", "must be >= 0")
        c.holds(self.orpo_lambda >= 0, "orpo_lambda", "must be >= 0")


@dataclasses.dataclass
class KTOConfig(TrainConfig):
    """KTO on unpaired feedback (answers labelled desirable or not, one at a time): the policy
    starts from the SFT model, which is also the frozen reference (docs/algorithms.md)."""

    epochs: int = 1
    batch_size: int = 32  # labelled answers per micro-batch (and as many mismatched ones)
    lr: float = 1e-4  # as DPO on the demo
    warmup_ratio: float = 0.1
    # How sharply the value saturates around the reference point (larger: stay nearer the
    # reference). The paper and TRL use 0.1; 0.3 is DPO's demo setting, kept for comparison.
    beta: float = 0.3
    # lambda_D and lambda_U. The paper advises desirable_weight * n_desirable /
    # (undesirable_weight * n_undesirable) in [1, 4/3]: with one of each per preference pair, 1.
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.holds(self.beta > 0, "beta", "must be > 0")
        for name in ("desirable_weight", "undesirable_weight"):
            c.holds(getattr(self, name) >= 0, name, "must be >= 0")
        c.holds(
            self.desirable_weight + self.undesirable_weight > 0,
            "desirable_weight",
            "and undesirable_weight must not both be 0",
        )


@dataclasses.dataclass
class OnPolicyConfig(ScaleSettings):
    """Settings shared by the on-policy RL stages (PPO and GRPO): sampling, rewards, guards,
    checkpoints and models."""

    seed: int = 0
    iterations: int = 80  # rollout + update cycles
    minibatch_size: int = 16  # rollouts per gradient step
    lr: float = 2e-5  # peak policy learning rate (AdamW), after warmup as lr_schedule says
    warmup_iterations: int = 2  # LR warms up linearly over these iterations
    # After warmup: "constant", or "linear" decay to 0 at the last iteration (CleanRL's
    # anneal_lr): the last updates are small, so the final policy does not depend on where in
    # the batch-to-batch noise of the updates the run happens to stop.
    lr_schedule: str = "constant"
    max_grad_norm: float = 1.0  # clipping, per model
    clip_eps: float = 0.2  # PPO-Clip ratio range [1 - eps, 1 + eps]
    # Sampling
    max_new_tokens: int = 32  # response length limit
    temperature: float = 1.0  # rollouts sample at this temperature; log-probs use it too
    top_p: float = 1.0
    missing_eos_penalty: float = -1.0  # added to the score of responses that never emit EOS
    # What samples the rollouts: "torch" (the project's batched, KV-cached decode loop),
    # "vllm" (a vLLM engine beside the policy on its GPU, the optional ``vllm`` extra; its
    # weights are replaced by the policy's before every rollout), or "auto": vLLM when it is
    # installed and the policy is on a CUDA GPU, else torch.
    rollout_backend: str = "auto"
    # The share of the GPU's memory the vLLM engine takes (its weights and KV cache); the
    # training models need the rest.
    vllm_gpu_memory: float = 0.3
    # Between rollouts the vLLM engine sleeps (vLLM's sleep level 2: its weights and KV cache
    # leave the GPU, so the training steps get that memory back); each rollout wakes it and
    # loads the policy's weights, which it does anyway. Off: the engine keeps its memory.
    vllm_sleep: bool = True
    # What the torch decode loop samples from: "copy", a copy of the policy in the dtype it
    # computes in, LoRA's adapters merged (under bf16/fp16 autocast no activation is cast
    # again before every layer, and no adapter matmuls run per token; it holds the weights
    # once more in that dtype, refreshed before each rollout), "policy" (the policy itself),
    # or "auto": the copy when plain PyTorch trains under bf16/fp16 autocast (2 bytes per
    # parameter more), else the policy. The copy needs plain PyTorch (distributed.zero_stage
    # null) and no lora.quantize_4bit.
    rollout_weights: str = "auto"
    # Rollout rows per forward pass when the policy, reference and critic score a rollout (no
    # gradient); None: the whole rollout in one. Each forward holds (rows, prompt + response
    # tokens, vocabulary) logits, which fill a GPU first with a large vocabulary: set it then.
    # Other matmul shapes: results may move in the last bits against None.
    scoring_batch_size: int | None = None
    # Train on this programmatic reward "module:function(prompt, response) -> float" instead of
    # the reward model (verifiable rewards; or to check the algorithm against a known reward).
    reward_function: str | None = None
    # Diagnostics and guards
    log_every: int = 1  # iterations between metric logs
    sample_every: int = 10  # iterations between sample tables (0: never)
    samples_logged: int = 8
    entropy_floor: float = 0.05  # warn when mean token entropy falls below (collapse)
    length_drift: float = 2.0  # warn when mean length leaves [1/x, x] times the first batch's
    gold_reward: str | None = None  # programmatic reward logged alongside (never trained on)
    # Checkpoints
    checkpoint_every: int = 10  # iterations between checkpoints (0: never)
    keep_checkpoints: int = 2
    checkpoint_dir: str | None = None  # None: "<output>.checkpoints"
    # Models
    max_prompt_length: int = 192  # prompts are cut from the left to this many tokens
    chat_template: bool = True
    dtype: str = "float32"
    device: str = "auto"
    trust_remote_code: bool = False
    log_model_artifacts: bool = True
    # Also publish the output to this s3:// prefix (or folder): objects first, manifest.json
    # last. None: the output stays where the stage wrote it.
    publish_to: str | None = None

    def _check(self, c: _Checks) -> None:  # before any model loads
        super()._check(c)
        c.one_of("lr_schedule", LR_SCHEDULES)
        c.one_of("dtype", DTYPES)
        c.one_of("rollout_backend", ROLLOUT_BACKENDS)
        c.one_of("rollout_weights", ROLLOUT_WEIGHTS)
        c.holds(
            self.rollout_weights != "copy"
            or (self.distributed.zero_stage is None and not self.lora.quantize_4bit),
            "rollout_weights",
            "cannot be copy under DeepSpeed (distributed.zero_stage set: its bf16/fp16 weights "
            "are half already, and ZeRO-3's are sharded) or with lora.quantize_4bit (no plain "
            "weights to copy): use auto or policy",
        )
        c.holds(0 < self.vllm_gpu_memory < 1, "vllm_gpu_memory", "must be in (0, 1)")
        c.holds(
            self.scoring_batch_size is None or self.scoring_batch_size >= 1,
            "scoring_batch_size",
            "must be >= 1 (or null: the whole rollout in one forward)",
        )
        c.holds(
            not (self.rollout_backend == "vllm" and self.lora.quantize_4bit),
            "rollout_backend",
            "cannot be vllm with lora.quantize_4bit (vLLM would need the 4-bit base re-quantised "
            "with the adapters merged into it every rollout): use torch",
        )
        for name in ("iterations", "minibatch_size", "max_new_tokens", "max_prompt_length"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.holds(self.log_every >= 1, "log_every", "must be >= 1")
        c.holds(self.lr > 0, "lr", "must be > 0")
        c.holds(self.warmup_iterations >= 0, "warmup_iterations", "must be >= 0")
        c.holds(self.clip_eps > 0, "clip_eps", "must be > 0")
        c.holds(self.temperature > 0, "temperature", "must be > 0 (rollouts sample)")
        c.holds(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        for name in ("sample_every", "samples_logged", "checkpoint_every", "keep_checkpoints"):
            c.holds(getattr(self, name) >= 0, name, "must be >= 0")
        c.holds(self.length_drift > 1, "length_drift", "must be > 1 (a ratio of lengths)")


@dataclasses.dataclass
class PPOConfig(OnPolicyConfig):
    """PPO against the reward model with a KL penalty to the SFT reference (InstructGPT's
    objective), optional PPO-ptx, and the PPO-Penalty variant. docs/ppo.md explains each field."""

    # 160 iterations at a peak lr of 3e-5 (linear decay): on the demo 65.6 +/- 2.5% gold win
    # rate over 3 seeds (120: 64.9 +/- 1.0%; 80 at 2e-5: 62.8 +/- 1.4%; results.md, 2026-12-03).
    iterations: int = 160
    lr: float = 3e-5
    rollout_batch_size: int = 64  # prompts sampled per iteration (one response each)
    ppo_epochs: int = 4  # passes over each rollout batch
    critic_lr: float = 1e-4  # value model learning rate
    # Both rates fall linearly to 0: on the demo the policy stops moving over the last
    # iterations (its batch KL then varies no more than a frozen policy's) and ends nearer SFT
    # (KL 0.40 instead of 0.53, mean of 3 seeds) at the same gold win rate (results.md).
    lr_schedule: str = "linear"
    # Reward: RM score at the last response token minus kl_coef * KL(policy || reference)
    kl_estimator: str = "k1"  # "k1" (log-ratio), "k3" (Schulman's, always >= 0) or "k2"
    # A fixed, firm beta keeps the policy where the reward model is still right (docs/ppo.md)
    kl_control: str = "fixed"  # "fixed" or "adaptive" (Ziegler et al. 2019)
    kl_coef: float = 0.2  # fixed (or initial) coefficient beta of the KL penalty
    kl_target: float = 0.5  # adaptive: target KL per response, in nats
    kl_horizon: int = 2000  # adaptive: responses over which the coefficient adapts
    normalize_scores: bool = False  # whiten RM scores with running mean/std
    score_clip: float | None = None  # clip (normalised) RM scores to [-c, c]
    # Advantages
    gamma: float = 1.0  # discount over response tokens
    lam: float = 0.95  # GAE lambda
    whiten_advantages: bool = True
    # Policy loss
    policy_loss: str = "clip"  # "clip" (PPO-Clip) or "penalty" (PPO-Penalty)
    penalty_beta: float = 0.05  # PPO-Penalty: initial coefficient of KL(old || new)
    penalty_target_kl: float = 0.01  # PPO-Penalty: beta halves/doubles around this KL
    # Value loss
    vf_coef: float = 0.5  # weight of the value loss
    value_clip: float = 0.2  # value clipping range around the rollout's values (0: off)
    critic_init: str = "reward"  # critic starts from the "reward" model or the "policy"
    # PPO-ptx: language-model loss on SFT data (InstructGPT's gamma); 0 turns it off
    ptx_coef: float = 0.0
    ptx_batch_size: int = 8

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.one_of("kl_estimator", KL_ESTIMATORS)
        c.one_of("kl_control", KL_CONTROLS)
        c.one_of("policy_loss", POLICY_LOSSES)
        c.one_of("critic_init", CRITIC_INITS)
        for name in ("rollout_batch_size", "ppo_epochs", "ptx_batch_size"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.holds(self.critic_lr > 0, "critic_lr", "must be > 0")
        c.holds(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        if self.kl_control == "adaptive":
            c.holds(self.kl_target > 0, "kl_target", "must be > 0 with kl_control 'adaptive'")
            c.holds(self.kl_horizon > 0, "kl_horizon", "must be > 0 with kl_control 'adaptive'")
        c.holds(self.penalty_target_kl > 0, "penalty_target_kl", "must be > 0")
        c.holds(self.score_clip is None or self.score_clip > 0, "score_clip", "must be > 0 or None")
        c.holds(0 <= self.gamma <= 1, "gamma", "must be in [0, 1]")
        c.holds(0 <= self.lam <= 1, "lam", "must be in [0, 1]")
        for name in ("vf_coef", "value_clip", "ptx_coef"):
            c.holds(getattr(self, name) >= 0, name, "must be >= 0")


@dataclasses.dataclass
class GRPOConfig(OnPolicyConfig):
    """GRPO: a group of responses per prompt, advantages relative to the group, no critic;
    PPO-Clip updates with KL(policy || reference) in the loss. docs/algorithms.md explains."""

    iterations: int = 40
    prompts_per_iteration: int = 16  # prompts sampled per iteration
    group_size: int = 8  # responses per prompt (G); the batch is prompts x G responses
    minibatch_size: int = 32
    grpo_epochs: int = 2  # passes over each rollout batch
    lr: float = 3e-5
    # Weight of the k3 KL(policy || reference) term in the loss (0: off). DeepSeekMath used 0.04;
    # against the demo's small reward model 0.2 over-optimises it less (docs/results.md).
    kl_coef: float = 0.2
    # How each response's advantage is computed: "grpo" (relative to its group's mean, and
    # std with scale_advantages), "rloo" (minus the mean of the other G - 1 responses to its
    # prompt) or "reinforce_pp" (REINFORCE++: the KL penalty kl_coef * k1 moves from the loss
    # into each token's reward, and every token's return is normalised over the whole batch).
    estimator: str = "grpo"
    # Divide by the group's std (True) or only subtract its mean (False: Dr. GRPO, Liu et al.
    # 2025). Against a reward model, dividing blows up its small, noisy differences between
    # near-identical answers; on the demo False gains 1-2 points (docs/results.md).
    scale_advantages: bool = False

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.holds(self.group_size >= 2, "group_size", "must be >= 2 (advantages are relative)")
        c.one_of("estimator", ADVANTAGE_ESTIMATORS)
        for name in ("prompts_per_iteration", "grpo_epochs"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.holds(self.kl_coef >= 0, "kl_coef", "must be >= 0")


@dataclasses.dataclass
class OnlineDPOConfig(OnPolicyConfig):
    """Online iterative DPO: rounds (``iterations``) of sampling K answers per prompt from the
    current policy, scoring them (the reward model, ``reward_function`` or ``judge``), pairing
    them and a few DPO epochs on those pairs. docs/algorithms.md explains the choices;
    ``clip_eps`` is not used."""

    iterations: int = 24  # rounds: sample -> score -> pair -> DPO
    prompts_per_iteration: int = 64  # prompts sampled per round
    samples_per_prompt: int = 4  # K answers sampled per prompt
    # "best_worst": one pair per prompt, its best answer against its worst; "all": every pair
    # of its answers with different scores (K(K-1)/2 at most). Equal scores never make a pair.
    pairs: str = "best_worst"
    # DPO's reference: the frozen "sft" model (an anchor for the whole run, as offline DPO), or
    # the "previous_round" policy (the one that sampled the round's answers: each round is a
    # step away from the last, so the policy can drift further over the rounds).
    reference: str = "sft"
    dpo_epochs: int = 2  # passes over each round's pairs
    minibatch_size: int = 16  # pairs per gradient step
    lr: float = 5e-5
    warmup_iterations: int = 1
    beta: float = 0.3  # DPO's implicit KL strength, as DPOConfig.beta
    loss_type: str = "sigmoid"  # "sigmoid" (DPO, or cDPO with label_smoothing) or "ipo"
    label_smoothing: float = 0.0  # cDPO: assumed probability that a pair's order is wrong
    # A judge "module:function(prompt, answers) -> scores" ranking the K answers to one prompt
    # together (a higher score is better, equal scores a tie) instead of the reward model.
    judge: str | None = None

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.holds(self.samples_per_prompt >= 2, "samples_per_prompt",
                "must be >= 2 (a pair needs two answers)")  # fmt: skip
        for name in ("prompts_per_iteration", "dpo_epochs"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.one_of("pairs", PAIR_SELECTIONS)
        c.one_of("reference", ONLINE_DPO_REFERENCES)
        c.one_of("loss_type", DPO_LOSSES)
        c.holds(self.beta > 0, "beta", "must be > 0")
        c.holds(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        c.holds(
            self.loss_type != "ipo" or self.label_smoothing == 0,
            "label_smoothing",
            "(cDPO) applies to loss_type 'sigmoid' only: must be 0 with 'ipo'",
        )
        c.holds(not (self.judge and self.reward_function), "judge",
                "and reward_function cannot both be set: one scores the answers")  # fmt: skip


@dataclasses.dataclass
class EvalConfig(Checked):
    """Evaluation of a candidate policy against the reference (SFT) on held-out prompts;
    docs/evaluation.md explains every metric."""

    seed: int = 0  # torch is seeded with it before each model samples: reproducible samples
    max_prompts: int = 200  # the first N prompts of the eval_prompts test split (0: all)
    # Responses per prompt and model. More samples reduce variance; win rates compare sample i
    # of the candidate with sample i of the reference for the same prompt.
    samples_per_prompt: int = 4
    batch_size: int = 64  # sequences per generation / scoring / log-prob batch
    max_new_tokens: int = 32  # response length limit
    temperature: float = 1.0  # sampling, not greedy: a policy is judged by what it samples
    top_p: float = 1.0
    chat_template: bool = True  # render prompts with the tokenizer's chat template
    # Tokens per sequence: prompts are cut from the left, SFT validation data from the right.
    max_length: int = 256
    # Import path "module:function(prompt, response) -> float" of a programmatic gold reward
    # (the demo task's is "rlhf.data.demo_task:gold_reward"); adds gold means and win rate.
    gold_reward: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False  # only for model code you have read
    report_samples: int = 8  # prompts shown side by side in the HTML report
    # Also publish report.html, metrics.json and gate.json to this s3:// prefix (or folder).
    publish_to: str | None = None
    # Model Registry (only when tracking to MLflow): names the candidate policy and its reward
    # model are registered under; "" registers nothing (and skips the champion gate).
    registered_policy: str = "rlhf-policy"
    registered_reward_model: str = "rlhf-reward-model"
    # Champion gate: the candidate takes the alias "champion" only if its win rate against the
    # current champion, on at least gate_min_samples paired samples, exceeds gate_threshold;
    # otherwise it gets "challenger". The first registered policy becomes champion.
    gate_threshold: float = 0.5
    gate_min_samples: int = 100
    gate_judge: str = "auto"  # "gold", "reward_model", or "auto" (gold when configured)

    def _check(self, c: _Checks) -> None:  # before any model loads
        for name in ("samples_per_prompt", "batch_size", "max_new_tokens"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.holds(
            self.max_length > self.max_new_tokens,
            "max_length",
            f"must exceed max_new_tokens ({self.max_new_tokens}): prompt and response fit in it",
        )
        c.holds(self.temperature > 0, "temperature", "must be > 0 (evaluation always samples)")
        c.holds(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        for name in ("report_samples", "gate_min_samples", "max_prompts"):
            c.holds(getattr(self, name) >= 0, name, "must be >= 0")
        c.holds(0 <= self.gate_threshold <= 1, "gate_threshold", "must be in [0, 1] (a win rate)")
        c.one_of("gate_judge", GATE_JUDGES)
        c.one_of("dtype", DTYPES)


@dataclasses.dataclass
class DeployConfig(Checked):
    """Serving the champion policy as a KServe InferenceService (docs/serving.md). The
    predictor's GPUs and resources come from the cluster config's ``deploy`` stage."""

    # The policy folder to serve (s3://, gs://, pvc://, hf://): in a pipeline, the policy the
    # run published (<publish_to>/<run>/policy); `rlhf deploy` needs it set.
    storage_uri: str | None = None
    name: str = "rlhf-policy"  # the InferenceService's name, also the served model's name
    # Where it goes: "" for the task pod's namespace (or the kubeconfig context's).
    namespace: str = ""
    # A ServingRuntime to use; "" lets KServe pick its runtime for modelFormat huggingface.
    runtime: str = ""
    # Extra arguments of the model server, e.g. ["--max_model_len=2048"] or, for a model vLLM
    # does not run, ["--backend=huggingface"].
    server_args: list[str] = dataclasses.field(default_factory=list)
    min_replicas: int = 1  # 0 lets KServe scale it to zero (serverless mode only)
    max_replicas: int = 1
    # How long to wait for Ready (image pull, model download, load) before rolling back.
    ready_timeout_seconds: int = 1800
    # The smoke request: one completion asked of the served model once it is ready.
    smoke_request: bool = True
    smoke_prompt: str = "Hello"
    smoke_max_tokens: int = 16
    smoke_path: str = "/openai/v1/completions"  # the Hugging Face runtime's OpenAI endpoint
    # A base URL the smoke request goes to instead of the service's cluster address
    # (status.address.url): a port-forward, a gateway, a test's stub server.
    smoke_url: str = ""
    # `rlhf deploy` outside a pipeline: the cluster config (YAML) whose stages.deploy and
    # serving_service_account size and credit the predictor; "" uses the defaults. In a
    # pipeline the compiled cluster config applies.
    cluster_config: str = ""

    def _check(self, c: _Checks) -> None:
        for name in ("ready_timeout_seconds", "smoke_max_tokens", "max_replicas"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.holds(self.min_replicas >= 0, "min_replicas", "must be >= 0")
        c.holds(self.max_replicas >= self.min_replicas, "max_replicas", "must be >= min_replicas")
        c.holds(self.smoke_path.startswith("/"), "smoke_path", "must start with /")
        c.holds(
            not self.smoke_url or self.smoke_url.startswith(("http://", "https://")),
            "smoke_url",
            "must be an http:// or https:// URL (or empty)",
        )


@dataclasses.dataclass
class SampleConfig(Checked):
    """Sampling candidate answers for labelling (the ``candidates`` stage, ``rlhf label
    sample``): K answers per prompt, split across the models, duplicates drawn again."""

    k: int = 4  # candidates per prompt, in all: split across the models as evenly as possible
    seed: int = 0  # torch is seeded with it before each model samples: reproducible batches
    max_prompts: int = 0  # the first N prompts (0: all)
    max_new_tokens: int = 64  # answer length limit
    temperature: float = 1.0  # > 0: candidates are sampled, so they differ
    top_p: float = 1.0
    # Rounds of drawing again for a model's answers that repeat another candidate's text (or are
    # empty); a task left with fewer distinct answers keeps them (at least 2), or is dropped.
    redraws: int = 3
    chat_template: bool = True  # render prompts with the tokenizer's chat template
    max_length: int = 512  # prompt + answer tokens; prompts are cut from the left
    batch_size: int = 32  # sequences per generation batch
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False  # only for model code you have read
    # Also publish the batch to this s3:// prefix (or folder).
    publish_to: str | None = None

    def _check(self, c: _Checks) -> None:  # before any model loads
        c.holds(self.k >= 2, "k", "must be >= 2 (a labeller ranks at least two answers)")
        for name in ("max_new_tokens", "batch_size"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("max_prompts", "redraws"):
            c.holds(getattr(self, name) >= 0, name, "must be >= 0")
        c.holds(
            self.max_length > self.max_new_tokens,
            "max_length",
            f"must exceed max_new_tokens ({self.max_new_tokens}): prompt and answer fit in it",
        )
        c.holds(self.temperature > 0, "temperature", "must be > 0 (candidates are sampled)")
        c.holds(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        c.one_of("dtype", DTYPES)


# The LM judge's default prompt: {prompt} is the conversation, {first} and {second} the two
# answers; the judge's reply is one of the two labels.
JUDGE_TEMPLATE = (
    "Which answer to the conversation below is better: more helpful, more correct and "
    "harmless?\n\nConversation:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
    "Reply with one letter, A or B."
)


@dataclasses.dataclass
class JudgeConfig(Checked):
    """AI feedback (``rlhf judge``): how a judge model reads the candidates. The judge itself
    (a reward model, a function or a causal LM) is named on the command line."""

    # The LM judge's prompt, one user message: {prompt} (the conversation, one "role: text"
    # line per turn), {first} and {second} (the two answers, in the order being judged).
    # "" uses JUDGE_TEMPLATE.
    template: str = ""
    # The LM judge's two replies: the first answer is better, the second is. Their
    # log-probabilities after the prompt decide; each pair is judged in both orders.
    labels: list[str] = dataclasses.field(default_factory=lambda: ["A", "B"])
    chat_template: bool = True  # render the LM judge's prompt with its chat template
    max_length: int = 1024  # tokens of a judged sequence; the prompt is cut from the left
    batch_size: int = 16  # sequences per forward pass
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False  # only for model code you have read

    @property
    def judging_template(self) -> str:
        return self.template or JUDGE_TEMPLATE

    def _check(self, c: _Checks) -> None:
        for key in ("{prompt}", "{first}", "{second}"):
            c.holds(key in self.judging_template, "template", f"must contain {key}")
        c.holds(
            len(self.labels) == 2 and all(self.labels) and self.labels[0] != self.labels[1],
            "labels",
            "must be two different non-empty replies",
        )
        for name in ("max_length", "batch_size"):
            c.holds(getattr(self, name) >= 1, name, "must be >= 1")
        c.one_of("dtype", DTYPES)
