"""The frozen reference's log-probs of every preference pair, for DPO and the reward model's
``log_ratio`` head: which model computes them, and which ranks do."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rlhf.config import TrainConfig
from rlhf.modeling import models
from rlhf.modeling.preference_logprobs import EncodedPair, cached_reference_logprobs
from rlhf.training import distributed
from rlhf.training.engine import frozen, sharded_loading, shards_weights
from rlhf.training.loop import LoopResult


def reference_logprobs(
    stage: str,
    preferences: str,
    sft_model: str,
    checkpoint_root: Path,
    train_set: list[EncodedPair],
    val_set: list[EncodedPair],
    pad_id: int,
    config: TrainConfig,
    device: torch.device,
    lora_model: torch.nn.Module | None = None,
) -> tuple[str, dict[str, torch.Tensor]]:
    """``cached_reference_logprobs`` of the SFT model, or under LoRA of ``lora_model`` with its
    adapters disabled (no second copy).

    With whole weights on every rank, rank 0 computes and caches them and the others read its
    cache. Sharded weights (ZeRO-3) need every rank in each forward pass: all ranks compute
    them together and rank 0 writes the cache."""

    def load() -> torch.nn.Module:
        if lora_model is not None:
            return lora_model
        with sharded_loading(config.distributed):
            reference = models.load_causal_lm(sft_model, config.dtype, config.trust_remote_code)
        return frozen(reference, config.distributed, device, "reference")

    def compute(write_cache: bool) -> tuple[str, dict[str, torch.Tensor]]:
        return cached_reference_logprobs(
            stage, preferences, sft_model, checkpoint_root, train_set, val_set, pad_id, config,
            load, write_cache,
        )  # fmt: skip

    if shards_weights(config.distributed):
        return compute(write_cache=distributed.launched_world().is_main)
    return distributed.main_first(lambda: compute(write_cache=True))


def preference_metrics(result: LoopResult, started: float, **counts: float) -> dict[str, float]:
    """A DPO-family run's result: the final validation metrics (``val/rewards/accuracy`` as
    ``rewards_accuracy``), the accuracy before training, the steps, ``counts`` (rows trained
    on ...) and the seconds since ``started``."""
    metrics = {k.removeprefix("val/").replace("/", "_"): v for k, v in result.final_metrics.items()}
    metrics["accuracy_start"] = result.initial_metrics.get("val/rewards/accuracy", float("nan"))
    metrics["steps"] = float(result.steps)
    metrics.update(counts)
    metrics["seconds"] = time.time() - started
    return metrics
