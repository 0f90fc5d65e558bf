"""Stage 2: the reward model.

Started from a causal LM (the SFT model by default) and trained on preference pairs with
-log sigmoid(r_w - r_l [- margin]). The reward r of an answer comes from one of two heads
(``RewardConfig.head``): ``log_ratio``, beta * (log pi(y|x) - log ref(y|x)) with the model's own
LM head against the frozen starting model (whose log-probs are computed once and cached, as in
DPO), or ``scalar``, a linear head on the hidden states pooled over the answer. Validation
reports the share of pairs ranked like the labels, the mean score gap, and (when a
programmatic gold reward is configured, as on the demo task) the share ranked like the
noise-free gold order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlhf.algorithms.reward_loss import pairwise_accuracy, pairwise_reward_loss
from rlhf.config import RewardConfig
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.gold import GoldReward, gold_order, load_reward_function
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Encoded
from rlhf.modeling.packed import PackedRecords
from rlhf.modeling.preference_logprobs import pair_logprobs
from rlhf.modeling.reward_scoring import (
    REFERENCE_DIR,
    SETTINGS_FILE,
    encode_for_reward,
    reward_scores,
)
from rlhf.stages.preference_reference import reference_logprobs
from rlhf.stages.publish import finish_training, publish_trained
from rlhf.stages.specs import ModelOutputs, RewardInputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training.batching import length_grouped_batches
from rlhf.training.engine import build_engine, sharded_loading
from rlhf.training.loop import train

log = logging.getLogger("rlhf.reward")


@dataclass
class Pair:
    chosen: Encoded
    rejected: Encoded
    margin: float
    gold_order: int  # +1 gold prefers chosen, -1 rejected, 0 tie or no gold reward

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def encode_pairs(
    rows: Iterable[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    config: RewardConfig,
    gold: GoldReward | None = None,
) -> PackedRecords[Pair]:
    """Each preference row's answers encoded as the reward model scores them, with the row's
    margin (``use_margin``) and, with ``gold``, which answer the gold reward prefers; packed."""
    pairs = PackedRecords(Pair)
    for r in rows:
        chosen, rejected = (
            encode_for_reward(tokenizer, r["prompt"], answer, config.max_length,
                              config.chat_template, config.scores_eos)
            for answer in (r["chosen"], r["rejected"])
        )  # fmt: skip
        margin = r.get("margin")
        margin = float(margin) if (config.use_margin and margin is not None) else 0.0
        order = gold_order(gold, r["prompt"], r["chosen"], r["rejected"])
        pairs.append(Pair(chosen, rejected, margin, order))
    return pairs


def run(
    config: RewardConfig,
    inputs: RewardInputs,
    outputs: ModelOutputs,
    tracker: Tracker | None = None,
) -> dict[str, float]:
    log_ratio = config.head == "log_ratio"  # the config checked head, pooling, beta
    tracker, started, device, ckpt_root, fingerprint, resume_path, world = start_training(
        "reward", config, inputs, outputs.model, tracker
    )
    gold = load_reward_function(config.gold_reward) if config.gold_reward else None

    tokenizer = models.load_tokenizer(inputs.sft_model, config.trust_remote_code)
    load = models.load_causal_lm if log_ratio else models.load_reward_model
    with sharded_loading(config.distributed):
        model = load(
            inputs.sft_model, config.dtype, config.trust_remote_code,
            lora.quantization_config(config.lora, config.dtype),
        )  # fmt: skip
    if not log_ratio:
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    model = lora.apply_lora(model, config.lora)  # r=0: the model itself
    model.to(device)
    engine = build_engine(
        model, config.lr, config.weight_decay, config.max_grad_norm, config.distributed, device
    )

    train_set, val_set = (
        encode_pairs(load_split(inputs.preferences, split), tokenizer, config, gold)
        for split in ("train", "validation")
    )
    if not train_set:
        raise ValueError(f"{inputs.preferences}: the train split is empty")
    pad_id = tokenizer.pad_token_id
    key, ref = None, {}
    if log_ratio:
        key, cached = reference_logprobs(
            "reward", inputs.preferences, inputs.sft_model, ckpt_root, train_set, val_set,
            pad_id, config, device, lora_model=model if lora.is_lora(model) else None,
        )  # fmt: skip
        ref = {k: v.to(device) for k, v in cached.items()}

    def scores(
        batch: list[Pair], split: str, rows: torch.Tensor | slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both answers' rewards; ``rows`` are the pairs' places in ``split`` (the reference
        log-probs of the log_ratio head are read there)."""
        if log_ratio:
            chosen, rejected = pair_logprobs(engine.module, batch, pad_id, device)
            ref_c, ref_r = ref[f"{split}_chosen"][rows], ref[f"{split}_rejected"][rows]
            return config.beta * (chosen - ref_c), config.beta * (rejected - ref_r)
        # One forward pass over chosen and rejected together.
        s = reward_scores(
            engine.module,
            [p.chosen for p in batch] + [p.rejected for p in batch],
            pad_id,
            device,
            config.pooling,
        )
        return s[: len(batch)], s[len(batch) :]

    lengths = train_set.lengths()

    # Indices, not pairs: a step builds its own pairs from the packed set, so the epoch's order
    # holds no copy of the data.
    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, config.batch_size, config.seed, epoch)

    def loss_fn(batch: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = [train_set[i] for i in batch]
        chosen, rejected = scores(pairs, "train", torch.tensor(batch, device=device))
        margin = torch.tensor([p.margin for p in pairs], device=device)
        loss = pairwise_reward_loss(chosen, rejected, margin)
        return loss, {"accuracy": pairwise_accuracy(chosen, rejected).item()}

    def evaluate() -> dict[str, float]:
        chosen, rejected = [], []
        for start in range(0, len(val_set), config.eval_batch_size):
            rows = slice(start, start + config.eval_batch_size)
            c, r = scores(val_set[rows], "val", rows)
            chosen.append(c)
            rejected.append(r)
        if not chosen:
            return {}
        c, r = torch.cat(chosen), torch.cat(rejected)
        metrics = {
            "val/loss": pairwise_reward_loss(c, r).item(),
            "val/accuracy": pairwise_accuracy(c, r).item(),
            "val/mean_margin": (c - r).mean().item(),
        }
        order = torch.tensor(val_set.column("gold_order"), device=c.device)
        decided = order != 0
        if decided.any():
            agree = torch.sign(c - r)[decided] == order[decided]
            metrics["val/gold_accuracy"] = agree.float().mean().item()
            # How often the (noisy) labels themselves agree with gold: the ceiling to read
            # val/accuracy against.
            metrics["val/label_gold_agreement"] = (order[decided] > 0).float().mean().item()
        return metrics

    result = train(
        engine,
        batches_for_epoch,
        loss_fn,
        evaluate,
        config,
        ckpt_root,
        tracker,
        stage="reward",
        fingerprint=fingerprint,
        resume_path=resume_path,
    )
    metrics = {k.removeprefix("val/"): v for k, v in result.final_metrics.items()}
    metrics.update(
        steps=float(result.steps),
        train_pairs=float(len(train_set)),
        seconds=time.time() - started,
    )
    settings: dict[str, Any] = {
        "head": config.head,
        "max_length": config.max_length,
        "chat_template": config.chat_template,
        "score_at_eos": config.scores_eos,  # the scorer encodes answers the same way
        "pooling": config.pooling,
    }
    extra_models = {}
    if log_ratio:
        settings["beta"] = config.beta
    if log_ratio and world.is_main:
        # The scorer needs the frozen reference too: saved inside, so the folder stands alone.
        extra_models[REFERENCE_DIR] = models.load_causal_lm(
            inputs.sft_model, config.dtype, config.trust_remote_code
        )
    publish_trained(
        engine,
        tokenizer,
        outputs.model,
        lora_config=config.lora,
        lora_base=inputs.sft_model,
        manifest={
            "artifact": "reward_model",
            "head": config.head,
            "base_model": inputs.sft_model,
            "data": str(inputs.preferences),
            "data_sha256": manifest_checksum(inputs.preferences),
            **({"reference_logprobs_key": key} if key else {}),
            "metrics": metrics,
        },
        tracker=tracker,
        extra_files={SETTINGS_FILE: settings},
        extra_models=extra_models,
        log_artifacts=config.log_model_artifacts,
        publish_to=config.publish_to,
    )
    finish_training(metrics, ckpt_root, config.checkpoint_dir, tracker)
    log.debug("reward: val accuracy %.3f", metrics.get("accuracy", float("nan")))
    return metrics
