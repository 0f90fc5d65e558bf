"""Bytes of model weights, gradients and optimizer state that one rank's process holds.

Counted from the tensors themselves, by storage: every tensor found is reduced to the
storage it lives in (a view of a flat buffer counts as that buffer), each storage is counted
once, in the first category that reaches it, in the order weights, gradients, optimizer. So a
ZeRO-1/2 parameter that is a view into DeepSpeed's flat buffer counts that buffer once, and a
ZeRO-3 fp32 "master" partition that shares the weights' storage (fp32 training) is not counted
twice.

Where the tensors are (DeepSpeed 0.19, ``deepspeed/runtime/zero/``), found by reading its
optimizers and checked on a 2-rank run:

- **weights**: every parameter's ``data`` (empty, 0 bytes, for a parameter ZeRO-3 has
  partitioned) and, under ZeRO-3, its local shard ``param.ds_tensor`` (the shards of a group
  live in one flat ``lp_param_buffer``). ZeRO-3 keeps parameters below
  ``stage3_param_persistence_threshold`` (100k elements: norms, biases) whole on every rank.
  Under ZeRO-1/2 the parameters are views into the whole flat ``bit16_groups_flat``: every
  rank holds all the weights.
- **gradients**: ``param.grad`` (plain PyTorch and ZeRO-0; ZeRO-1 keeps whole gradients until
  the step), ``param.grad_accum`` (ZeRO-2 keeps the gradients of the parameters that overlap
  this rank's partition there, also gathered in ``all_grad_tensors``), the flat partitions
  ``averaged_gradients`` (ZeRO-1/2 at the step), ZeRO-3's ``grad_partitions_flat_buffer``
  (this rank's gradient partition), the reduce buffer ``ipg_buffer``, the fp32 gradient buffer
  ``fp32_groups_gradients_flat`` of bf16 under ZeRO-0 (``BF16_Optimizer``), and the ``.grad`` of
  the tensors the inner optimizer updates.
- **optimizer**: the tensors the inner torch optimizer updates (under ZeRO 1-3 this rank's
  flat fp32 partition, ``single_partition_of_fp32_groups`` or ``fp32_partitioned_groups_flat``:
  the master weights) and its state (AdamW's ``exp_avg``, ``exp_avg_sq``, ``step``).

Not counted: activations, DDP's gradient buckets (its C++ reducer keeps a gradient-sized copy
that no Python object exposes), communication scratch, and the allocator's and libraries'
own memory; the process's RSS (measured beside) shows those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

# Attributes of DeepSpeed's ZeRO optimizers that hold gradients (or views of them).
GRADIENT_HOLDERS = (
    "averaged_gradients",
    "all_grad_tensors",
    "grad_partitions_flat_buffer",
    "ipg_buffer",
    "fp32_groups_gradients_flat",  # bf16/fp16 under ZeRO-0 (BF16_Optimizer): fp32 gradients
)


@dataclass(frozen=True)
class HeldBytes:
    weights: int
    gradients: int
    optimizer: int

    @property
    def model_states(self) -> int:
        """What the ZeRO paper shards: weights + gradients + optimizer state."""
        return self.weights + self.gradients + self.optimizer

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "model_states": self.model_states}


def held_bytes(model: torch.nn.Module, optimizer: Any) -> HeldBytes:
    """What this rank holds of ``model`` (the Hugging Face model) and ``optimizer`` (the
    engine's: a torch optimizer, or DeepSpeed's ZeRO optimizer wrapping one)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch optimizer
    params = list(model.parameters())
    # What it updates: its groups' tensors, and the keys of its state (ZeRO-3 puts its flat
    # fp32 partitions into the groups only while it steps them).
    updated = [p for group in inner.param_groups for p in group["params"]] + list(inner.state)
    seen: set[tuple[str, int]] = set()

    def take(tensors: Iterable[Any]) -> int:
        total = 0
        for t in _tensors(tensors):
            storage = t.untyped_storage()
            key = (str(t.device), storage.data_ptr())
            if storage.nbytes() == 0 or key in seen:
                continue
            seen.add(key)
            total += storage.nbytes()
        return total

    weights = take([p.data for p in params] + [getattr(p, "ds_tensor", None) for p in params])
    gradients = take(
        [p.grad for p in params + updated]
        + [getattr(p, "grad_accum", None) for p in params]
        + [getattr(optimizer, name, None) for name in GRADIENT_HOLDERS]
    )
    return HeldBytes(weights, gradients, take([updated, list(inner.state.values())]))


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``obj``: a tensor, or lists, tuples and dict values of them, nested."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
