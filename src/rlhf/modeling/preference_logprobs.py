"""Summed answer log-probs of preference pairs, and the frozen reference's, computed once.

DPO and the reward model's ``log_ratio`` head both score an answer by
beta * (log pi(y|x) - log ref(y|x)). The reference never changes, so its log-probs are
computed once per data set and cached as a safetensors file (float32 tensors, 4 bytes a value;
the key in its metadata): beside the checkpoints while training (a resumed or rerun stage reuses
them) and in the output folder. The cache is keyed by a checksum of the data, the reference
weights and the encoding settings, so a stale one is never used. A cache of the JSON format
written before (``reference_logprobs.json``) is not read: the stage recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from transformers import PreTrainedModel

from rlhf import storage
from rlhf.config import TrainConfig
from rlhf.console.progress import Progress
from rlhf.data.artifacts import manifest_checksum
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Encoded
from rlhf.modeling.forward import sequence_logprob_sums
from rlhf.modeling.padding import collate

log = logging.getLogger("rlhf.reference")

REFERENCE_CACHE = "reference_logprobs.safetensors"  # in the checkpoint folder and the output model


class EncodedPair(Protocol):
    chosen: Encoded
    rejected: Encoded


def reference_key(preferences: str, reference_model: str, config: TrainConfig) -> str:
    """Checksum of what the reference log-probs depend on: the data's content checksum, the
    reference model's weight files, and how pairs are encoded."""
    folder = Path(models.resolve(reference_model))
    try:
        weights = [f for f in storage.read_manifest(folder)["files"] if "model" in f["path"]]
    except (FileNotFoundError, KeyError):
        weights = [
            {"path": p.name, "sha256": storage.sha256_file(p)}
            for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
            if p.name != REFERENCE_CACHE  # a published DPO model's cache is no weight file
        ]
    if not weights:
        raise ValueError(f"{reference_model}: no model weights found to key the reference cache on")
    parts = {
        "data": manifest_checksum(preferences),
        "weights": sorted((w["path"], w["sha256"]) for w in weights),
        "max_length": config.max_length,
        "chat_template": config.chat_template,
        "dtype": config.dtype,
    }
    if config.lora.quantize_4bit:  # a 4-bit base scores differently from the saved weights
        parts["quantize_4bit"] = True
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_reference_cache(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached log-probs when ``path`` holds ones for ``key``; None otherwise."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as cache:
            if (cache.metadata() or {}).get("key") != key:
                log.info("%s is for other data or another reference model; recomputing", path)
                return None
            # Copied out: safe_open's tensors map the file, and would change if it were
            # rewritten in place (or fault if it were truncated) while training reads them.
            return {name: cache.get_tensor(name).clone() for name in cache.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as err:
        log.warning("ignoring unreadable reference cache %s: %s", path, err)
        return None


def cache_bytes(key: str, logprobs: dict[str, torch.Tensor]) -> bytes:
    """The cache file's content: ``logprobs`` as float32 safetensors, ``key`` in the metadata.
    (JSON cost ~20 bytes of text a value and, parsed, Python floats in lists.)"""
    tensors = {k: v.to(torch.float32).contiguous() for k, v in logprobs.items()}
    return save(tensors, metadata={"key": key})


def pair_logprobs(
    model: PreTrainedModel, pairs: list[EncodedPair], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) summed answer log-probs of the chosen and of the rejected answers: one forward
    pass over both halves."""
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    sums = sequence_logprob_sums(model, **{k: v.to(device) for k, v in batch.items()})
    return sums[: len(pairs)], sums[len(pairs) :]


@torch.no_grad()
def reference_logprobs(
    model: PreTrainedModel,
    pairs: list[EncodedPair],
    pad_id: int,
    batch_size: int,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected log-probs of every pair (CPU, float32), in batches of
    ``batch_size`` in data order: the batches validation uses, so that before the first step
    (model = reference) every validation margin is exactly 0, not padding-dependent noise.
    ``progress`` counts the pairs."""
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        c, r = pair_logprobs(model, batch, pad_id, device)
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
        if progress is not None:
            progress.update(len(batch))
    if not chosen:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(chosen), torch.cat(rejected)


def cached_reference_logprobs(
    stage: str,
    preferences: str,
    reference_model: str,
    checkpoint_root: Path,
    train_set: list[EncodedPair],
    val_set: list[EncodedPair],
    pad_id: int,
    config: TrainConfig,
    load_reference: Callable[[], torch.nn.Module],
    write_cache: bool = True,
) -> tuple[str, dict[str, torch.Tensor]]:
    """The cache key (``reference_key``) and {"train_chosen", "train_rejected", "val_chosen",
    "val_rejected"} (CPU) of the frozen reference ``reference_model`` on the pairs of
    ``preferences``: read from ``checkpoint_root / REFERENCE_CACHE`` when it holds them for
    that key, else computed with ``load_reference()`` (the model, placed; under LoRA the
    trained model, run with its adapters disabled) and written there when ``write_cache``."""
    key = reference_key(preferences, reference_model, config)
    cache_path = checkpoint_root / REFERENCE_CACHE
    cached = read_reference_cache(cache_path, key)
    if cached is None:
        started = time.time()
        reference = load_reference()
        was_training = reference.training
        reference.eval()
        with (
            Progress(
                f"{stage} reference log-probs", len(train_set) + len(val_set), "pair"
            ) as progress,
            lora.adapters_disabled(reference),
        ):
            batch_size = config.eval_batch_size
            tc, tr = reference_logprobs(reference, train_set, pad_id, batch_size, progress)
            vc, vr = reference_logprobs(reference, val_set, pad_id, batch_size, progress)
        reference.train(was_training)
        del reference
        cached = {"train_chosen": tc, "train_rejected": tr, "val_chosen": vc, "val_rejected": vr}
        if write_cache:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            storage.atomic_write_bytes(cache_path, cache_bytes(key, cached))
        log.debug(
            "%s: reference log-probs of %d pairs in %.0fs, cached in %s",
            stage, len(train_set) + len(val_set), time.time() - started, cache_path,
        )  # fmt: skip
    else:
        log.info("%s: reusing the reference log-probs cached in %s", stage, cache_path)
    if len(cached["train_chosen"]) != len(train_set) or len(cached["val_chosen"]) != len(val_set):
        raise ValueError(f"{cache_path}: cache does not match the data's pair counts")
    return key, cached
