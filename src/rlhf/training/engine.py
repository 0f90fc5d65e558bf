"""The engine every trainer steps through: one model, its optimizer, precision and placement.

The loops (``training/loop.py``, ``training/on_policy_loop.py``) never call an optimizer or
``loss.backward()`` themselves; they call ``engine.backward(loss)`` for each micro-batch and
``engine.step()`` once per optimizer step, and set the learning rate with ``engine.set_lr``.
What is behind it follows ``distributed.zero_stage``:

- ``None``: plain PyTorch. AdamW; with several ranks the model is wrapped in
  DistributedDataParallel, which averages the gradients across ranks in ``backward``.
  ``precision`` bf16/fp16 runs the forward pass under autocast (weights stay fp32; fp16 adds
  a dynamic loss scale).
- ``0``-``3``: DeepSpeed with that ZeRO stage. DeepSpeed keeps fp32 master weights in its
  optimizer under bf16/fp16, shards the optimizer state (1), gradients (2) and weights (3)
  across ranks, and may offload them to the CPU. Gradient accumulation stays the loop's: the
  engine runs with ``managed_gradient_accumulation: false``, so each ``step()`` is a boundary.

Checkpoints are the engine's own (``save_to``/``load_from`` a folder; every rank calls them):
one ``engine.pt`` for plain PyTorch, DeepSpeed's sharded files under ZeRO. The published
model is always whole: :meth:`Engine.weights_to_publish` gathers ZeRO-3's shards on rank 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlhf.config import DistributedConfig
from rlhf.training import distributed

log = logging.getLogger("rlhf.engine")

ADAM_BETAS = (0.9, 0.95)
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
_DEEPSPEED_MISSING = (
    "distributed.zero_stage={stage} needs DeepSpeed, which is not installed: "
    "pip install 'rlhf[deepspeed]' (or the CUDA image), or set distributed.zero_stage=null "
    "to train on plain PyTorch"
)


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, matrices_only: bool = True
) -> list[dict[str, Any]]:
    """AdamW's groups: weight decay on weight matrices only (not on biases, norms or gains),
    or on every weight when not ``matrices_only``."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if not matrices_only:
        return [{"params": trained, "weight_decay": weight_decay}]
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Engine:
    """A trained model behind one interface, whichever backend holds it.

    ``module`` is what a loss function calls (the DDP or DeepSpeed wrapper: calling it keeps
    the ranks' gradients in step); ``model`` is the Hugging Face model itself, for
    ``generate``, its config and ``save_pretrained``."""

    module: torch.nn.Module

    def __init__(
        self, model: torch.nn.Module, config: DistributedConfig, device: torch.device
    ) -> None:
        self.model = model
        self.device = device
        self.precision = config.precision
        self.world = distributed.launched_world()

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype :meth:`autocast` computes in, None when it does not cast (the weights'
        own dtype: fp32, or DeepSpeed's bf16/fp16 weights)."""
        return None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context the forward pass of a training step runs in."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self) -> float | None:
        """Clip, take one optimizer step, zero the gradients; the gradient norm before
        clipping (None when clipping is off)."""
        raise NotImplementedError

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer_groups():
            group["lr"] = lr

    def optimizer_groups(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def save_to(self, folder: Path) -> None:
        """Write the weights and optimizer state under ``folder`` (every rank calls it)."""
        raise NotImplementedError

    def load_from(self, folder: Path) -> None:
        raise NotImplementedError

    def weights_to_publish(self) -> dict[str, torch.Tensor] | None:
        """Every rank calls it. On rank 0: the whole model's fp32 weights when ``model``
        does not hold them itself (ZeRO-3 shards; under bf16/fp16 the optimizer's fp32 master
        weights, not the module's low-precision copies), else None (publish ``model`` as it
        is). None on the other ranks."""
        return None

    @contextlib.contextmanager
    def gathered(self) -> Iterator[torch.nn.Module]:
        """``model`` with every weight whole on every rank while inside (ZeRO-3 gathers its
        shards; otherwise it is the model as is): for generation."""
        yield self.model


class TorchEngine(Engine):
    """Plain PyTorch: AdamW, DDP across ranks, autocast for bf16/fp16."""

    def __init__(
        self,
        model: torch.nn.Module,
        groups: list[dict[str, Any]],
        lr: float,
        max_grad_norm: float,
        config: DistributedConfig,
        device: torch.device,
    ) -> None:
        super().__init__(model, config, device)
        self.max_grad_norm = max_grad_norm
        if self.world.size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.module = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.module = model
        # A single group is given as the list of its parameters: AdamW's own layout.
        params = groups[0]["params"] if len(groups) == 1 else groups
        self.optimizer = torch.optim.AdamW(
            params, lr=lr, betas=ADAM_BETAS, weight_decay=groups[0]["weight_decay"]
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> float | None:
        norm = None
        if self.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            params = self.model.parameters()
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def optimizer_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def save_to(self, folder: Path) -> None:
        if self.world.is_main:  # DDP keeps every rank's weights and state equal
            folder.mkdir(parents=True, exist_ok=True)
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
            }
            torch.save(state, folder / "engine.pt")

    def load_from(self, folder: Path) -> None:
        state = torch.load(folder / "engine.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


class DeepSpeedEngine(Engine):
    """DeepSpeed with ZeRO stage 0-3, optional CPU offload and bf16/fp16 mixed precision."""

    def __init__(
        self,
        model: torch.nn.Module,
        groups: list[dict[str, Any]],
        lr: float,
        max_grad_norm: float,
        config: DistributedConfig,
        device: torch.device,
    ) -> None:
        import deepspeed

        super().__init__(model, config, device)
        self.zero_stage = config.zero_stage
        ds_config = deepspeed_config(config, lr, max_grad_norm)
        self.module, self.optimizer, _, _ = deepspeed.initialize(
            model=model,
            model_parameters=groups,
            config=ds_config,
        )

    def backward(self, loss: torch.Tensor) -> None:
        self.module.backward(loss, scale_wrt_gas=False)

    def step(self) -> float | None:
        self.module.step()
        norm = self.module.get_global_grad_norm()
        self.module.zero_grad()
        return None if norm is None else float(norm)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def save_to(self, folder: Path) -> None:
        self.module.save_checkpoint(str(folder), tag="engine", save_latest=False)

    def load_from(self, folder: Path) -> None:
        loaded, _ = self.module.load_checkpoint(
            str(folder), tag="engine", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if loaded is None:
            raise RuntimeError(f"{folder}: DeepSpeed found no checkpoint to load")

    def weights_to_publish(self) -> dict[str, torch.Tensor] | None:
        if self.zero_stage != 3 and self.precision == "fp32":
            return None  # the module holds the fp32 weights, whole
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        whole: dict[int, torch.Tensor] = {}
        for param in self.model.parameters():
            # A trained weight: the optimizer's fp32 master copy, assembled from the ranks'
            # partitions (every rank takes part). A frozen one (LoRA's base) is the module's.
            full = safe_get_full_fp32_param(param) if param.requires_grad else None
            if full is None:
                with deepspeed.zero.GatheredParameters([param], enabled=self.zero_stage == 3):
                    full = param.data.detach().clone()
            if self.world.is_main:
                whole[id(param)] = full.float().cpu()
        if not self.world.is_main:
            return None
        # By name, tied weights under each of their names, buffers as the module holds them.
        return {
            name: whole[id(value)] if id(value) in whole else value.detach().cpu()
            for name, value in self.model.state_dict(keep_vars=True).items()
        }

    @contextlib.contextmanager
    def gathered(self) -> Iterator[torch.nn.Module]:
        if self.zero_stage != 3:
            yield self.model
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters())):
            yield self.model


def deepspeed_config(config: DistributedConfig, lr: float, max_grad_norm: float) -> dict[str, Any]:
    """DeepSpeed's JSON config for one engine (each parameter group brings its own weight
    decay). The batch sizes are bookkeeping only: the loop feeds micro-batches and calls
    ``step()`` at its own accumulation boundaries."""
    return {
        **_placement_config(config),
        "managed_gradient_accumulation": False,
        "gradient_clipping": max_grad_norm if max_grad_norm > 0 else 0.0,
        "optimizer": {
            "type": "AdamW",
            # torch's own AdamW: no compiled op needed, the same update as plain PyTorch.
            "params": {
                "lr": lr,
                "betas": list(ADAM_BETAS),
                "torch_adam": True,
            },
        },
        # torch's AdamW also when the optimizer state is offloaded to the CPU.
        "zero_force_ds_cpu_optimizer": False,
    }


def _placement_config(config: DistributedConfig) -> dict[str, Any]:
    """The part of DeepSpeed's config that says where weights live and in which precision:
    shared by trained engines, frozen models and sharded loading, which must agree on it."""
    zero: dict[str, Any] = {"stage": config.zero_stage}
    if config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if config.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "bf16": {"enabled": config.precision == "bf16"},
        "fp16": {"enabled": config.precision == "fp16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def deepspeed_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


def uses_deepspeed(config: DistributedConfig) -> bool:
    """Whether engines for ``config`` run on DeepSpeed; raises a clear error when ZeRO 1-3 is
    asked for without DeepSpeed installed (stage 0 then falls back to plain PyTorch)."""
    if config.zero_stage is None:
        return False
    if deepspeed_available():
        return True
    if config.zero_stage == 0:
        return False
    raise ValueError(_DEEPSPEED_MISSING.format(stage=config.zero_stage))


def shards_weights(config: DistributedConfig) -> bool:
    """Whether ``config`` shards every model's weights across the ranks (DeepSpeed ZeRO-3).
    Then no rank holds a whole model, and each forward pass of a model is a collective: every
    rank must run it, the same number of times (each layer's weights are gathered in turn)."""
    return config.zero_stage == 3 and uses_deepspeed(config)


@contextlib.contextmanager
def sharded_loading(config: DistributedConfig) -> Iterator[None]:
    """Load the stage's models inside this: under ZeRO-3 transformers then builds each model
    under ``deepspeed.zero.Init`` and reads every weight straight into this rank's shard, so no
    rank ever holds a whole model (a 70B model would not fit). Otherwise nothing changes."""
    if not shards_weights(config):
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig

    # transformers keeps only a weak reference: the sharded loading lasts while this lives.
    alive = HfDeepSpeedConfig(_placement_config(config))
    try:
        yield
    finally:
        del alive


def frozen(
    model: torch.nn.Module, config: DistributedConfig, device: torch.device, name: str
) -> Any:
    """A model that is only run, never trained (PPO's and GRPO's reference and reward model,
    DPO's reference), in eval mode without gradients: under ZeRO-3 sharded across the ranks
    like the trained models (with ``offload_params`` its shards stay in CPU memory), otherwise
    a whole copy on ``device``. ``name`` says which in the log."""
    model.requires_grad_(False).eval()
    if not shards_weights(config):
        return model.to(device)
    import deepspeed

    # No optimizer: DeepSpeed only partitions the weights and gathers each layer's in turn.
    inference, *_ = deepspeed.initialize(model=model, config=_placement_config(config))
    world = distributed.launched_world()
    if world.is_main:
        log.info("%s (frozen): sharded across %d ranks (ZeRO-3)", name, world.size)
    return inference.module


def prepare_backend(config: DistributedConfig, device: torch.device) -> distributed.World:
    """Join the process group the engines need; call once per stage before building them."""
    use_ds = uses_deepspeed(config)
    if config.zero_stage == 0 and not use_ds:
        log.warning(
            "distributed.zero_stage=0 without DeepSpeed installed: training on plain PyTorch "
            "(the same ZeRO-0 arithmetic: nothing is sharded)"
        )
    if use_ds and device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return distributed.start(config, device, need_group=use_ds)


def build_engine(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    max_grad_norm: float,
    config: DistributedConfig,
    device: torch.device,
    decay_matrices_only: bool = True,
) -> Engine:
    """The engine for ``model`` (already on ``device``): DeepSpeed when ``config.zero_stage``
    is set and DeepSpeed is installed, plain PyTorch otherwise. AdamW decays the weight
    matrices only, or every weight when not ``decay_matrices_only``."""
    cls = DeepSpeedEngine if uses_deepspeed(config) else TorchEngine
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    groups = parameter_groups(model, weight_decay, decay_matrices_only)
    return cls(model, groups, lr, max_grad_norm, config, device)
