"""DPO stage: direct preference optimisation on preference pairs, no reward model.

The policy starts from the SFT model, which is also the frozen reference. Each step scores the
chosen and rejected answers of a batch of pairs under the policy (one forward pass over both)
and minimises the DPO loss (or IPO, or cDPO: ``algorithms/dpo_loss.py``). The reference's
log-probs never change, so they are computed once per data set before training and cached:
beside the checkpoints while training (a resumed or rerun stage reuses them) and in the output
folder, keyed by a checksum of the data, the reference weights and the encoding settings, so a
stale cache is never used. Training runs in the loop SFT and the reward model use
(``training/loop.py``: schedule, accumulation, clipping, checkpoints, resume).

Metrics, on train and validation: the loss, the implicit rewards beta * log(pi / ref) of the
chosen and rejected answers, their margin, and the share of pairs where the chosen answer's
implicit reward is higher (accuracy); with a gold reward, that share against the gold order.

The reference-free losses (``loss_type`` simpo or orpo: ``algorithms/simpo_loss.py``,
``algorithms/orpo_loss.py``) score answers by the policy's own per-token mean log-prob: no
reference model is loaded and no reference log-probs are computed or cached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlhf.algorithms.dpo_loss import DPOOutput, dpo_loss
from rlhf.algorithms.orpo_loss import orpo_loss
from rlhf.algorithms.simpo_loss import simpo_loss
from rlhf.config import REFERENCE_FREE_LOSSES, DPOConfig
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.gold import GoldReward, gold_order, load_reward_function
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Encoded, encode_prompt_answer
from rlhf.modeling.packed import PackedRecords
from rlhf.modeling.preference_logprobs import (
    REFERENCE_CACHE,
    cache_bytes,
    pair_logprobs,
)
from rlhf.modeling.reward_scoring import as_messages
from rlhf.stages.preference_reference import preference_metrics, reference_logprobs
from rlhf.stages.publish import finish_training, publish_trained
from rlhf.stages.specs import DPOInputs, ModelOutputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training.batching import length_grouped_batches
from rlhf.training.engine import Engine, build_engine, sharded_loading
from rlhf.training.loop import train

log = logging.getLogger("rlhf.dpo")


@dataclass
class Pair:
    chosen: Encoded
    rejected: Encoded
    gold_order: int  # +1 gold prefers chosen, -1 rejected, 0 tie or no gold reward

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    @property
    def answer_tokens(self) -> tuple[int, int]:
        """|y_w|, |y_l|: the tokens each answer's log-prob sums over (what the loss counts;
        the first token is never predicted)."""
        return sum(self.chosen.loss_mask[1:]), sum(self.rejected.loss_mask[1:])


def encode_pairs(
    rows: Iterable[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    config: DPOConfig,
    gold: GoldReward | None = None,
) -> PackedRecords[Pair]:
    """Each preference row's chosen and rejected answer encoded after its prompt, packed;
    ``gold`` (a programmatic reward) fills in which answer it prefers."""
    pairs = PackedRecords(Pair)
    for r in rows:
        messages = as_messages(r["prompt"])
        chosen, rejected = (
            encode_prompt_answer(tokenizer, messages, answer, config.max_length,
                                 config.chat_template)
            for answer in (r["chosen"], r["rejected"])
        )  # fmt: skip
        pairs.append(
            Pair(chosen, rejected, gold_order(gold, r["prompt"], r["chosen"], r["rejected"]))
        )
    return pairs


def run(
    config: DPOConfig, inputs: DPOInputs, outputs: ModelOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    # Before the reference log-prob cache in the checkpoint folder is read or rewritten.
    tracker, started, device, ckpt_root, fingerprint, resume_path, _ = start_training(
        "dpo", config, inputs, outputs.model, tracker
    )
    gold = load_reward_function(config.gold_reward) if config.gold_reward else None

    tokenizer = models.load_tokenizer(inputs.sft_model, config.trust_remote_code)
    pad_id = tokenizer.pad_token_id

    train_set, val_set = (
        encode_pairs(load_split(inputs.preferences, split), tokenizer, config, gold)
        for split in ("train", "validation")
    )
    if not train_set:
        raise ValueError(f"{inputs.preferences}: the train split is empty")

    # --- reference log-probs, once per data set ----------------------------------------
    # Under LoRA the reference is the policy with its adapters disabled: no second copy.
    def policy_engine() -> Engine:
        with sharded_loading(config.distributed):
            policy = models.load_causal_lm(
                inputs.sft_model, config.dtype, config.trust_remote_code,
                lora.quantization_config(config.lora, config.dtype),
            )  # fmt: skip
        policy = lora.apply_lora(policy, config.lora).to(device)
        return build_engine(
            policy, config.lr, config.weight_decay, config.max_grad_norm, config.distributed,
            device,
        )  # fmt: skip

    # Under LoRA the engine comes first: its model, adapters off, computes the reference (and
    # under ZeRO-3 only the engine can run the sharded model).
    reference_free = config.loss_type in REFERENCE_FREE_LOSSES
    engine = policy_engine() if config.lora.r or reference_free else None
    if reference_free:  # SimPO, ORPO: no reference model in memory, nothing to cache
        key, cached = None, {}
        ref = {name: torch.zeros(len(data), device=device)
               for name, data in (("train_chosen", train_set), ("train_rejected", train_set),
                                  ("val_chosen", val_set), ("val_rejected", val_set))}  # fmt: skip
    else:
        key, cached = reference_logprobs(
            "dpo", inputs.preferences, inputs.sft_model, ckpt_root, train_set, val_set, pad_id,
            config, device, lora_model=engine.model if engine else None,
        )  # fmt: skip
        ref = {k: v.to(device) for k, v in cached.items()}
    if engine is None:  # full fine-tuning: loaded after the reference is freed
        engine = policy_engine()

    def loss_on(
        pairs: list[Pair], ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
    ) -> DPOOutput:
        chosen, rejected = pair_logprobs(engine.module, pairs, pad_id, device)
        if not reference_free:
            return dpo_loss(
                chosen, rejected, ref_chosen, ref_rejected,
                config.beta, config.loss_type, config.label_smoothing,
            )  # fmt: skip
        tokens = torch.tensor([p.answer_tokens for p in pairs], device=device)
        if config.loss_type == "simpo":
            return simpo_loss(chosen, rejected, tokens[:, 0], tokens[:, 1], config.beta,
                              config.simpo_gamma)  # fmt: skip
        return orpo_loss(chosen, rejected, tokens[:, 0], tokens[:, 1], config.orpo_lambda)

    def reward_stats(out: DPOOutput) -> dict[str, float]:
        return {
            "rewards/chosen": out.chosen_rewards.mean().item(),
            "rewards/rejected": out.rejected_rewards.mean().item(),
            "rewards/margin": out.margins.mean().item(),
            "rewards/accuracy": out.accuracy.item(),
        }

    lengths = train_set.lengths()

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return length_grouped_batches(lengths, config.batch_size, config.seed, epoch)

    def loss_fn(batch: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.tensor(batch, device=device)
        out = loss_on(
            [train_set[i] for i in batch], ref["train_chosen"][idx], ref["train_rejected"][idx]
        )
        return out.loss, reward_stats(out)

    def evaluate() -> dict[str, float]:
        outs = []
        for start in range(0, len(val_set), config.eval_batch_size):
            sl = slice(start, start + config.eval_batch_size)
            outs.append(loss_on(val_set[sl], ref["val_chosen"][sl], ref["val_rejected"][sl]))
        if not outs:
            return {}
        merged = DPOOutput(
            torch.cat([o.losses for o in outs]).mean(),
            torch.cat([o.losses for o in outs]),
            torch.cat([o.chosen_rewards for o in outs]),
            torch.cat([o.rejected_rewards for o in outs]),
        )
        metrics = {"val/loss": merged.loss.item()}
        metrics.update({f"val/{k}": v for k, v in reward_stats(merged).items()})
        order = torch.tensor(val_set.column("gold_order"), device=merged.margins.device)
        decided = order != 0
        if decided.any():
            agree = torch.sign(merged.margins)[decided] == order[decided]
            metrics["val/rewards/gold_accuracy"] = agree.float().mean().item()
        return metrics

    result = train(
        engine,
        batches_for_epoch,
        loss_fn,
        evaluate,
        config,
        ckpt_root,
        tracker,
        stage="dpo",
        fingerprint=fingerprint,
        resume_path=resume_path,
    )
    metrics = preference_metrics(result, started, train_pairs=float(len(train_set)))
    engine.model.config.use_cache = True
    publish_trained(
        engine,
        tokenizer,
        outputs.model,
        lora_config=config.lora,
        lora_base=inputs.sft_model,
        manifest={
            "artifact": "dpo_policy",
            "sft_model": inputs.sft_model,
            "data": str(inputs.preferences),
            "data_sha256": manifest_checksum(inputs.preferences),
            "reference_logprobs_key": key,
            "metrics": metrics,
        },
        tracker=tracker,
        extra_files={REFERENCE_CACHE: cache_bytes(key, cached)} if key else {},
        log_artifacts=config.log_model_artifacts,
        publish_to=config.publish_to,
    )
    finish_training(metrics, ckpt_root, config.checkpoint_dir, tracker)
    log.debug(
        "dpo: val implicit-reward accuracy %.3f -> %.3f, margin %.3f",
        metrics["accuracy_start"], metrics.get("rewards_accuracy", float("nan")),
        metrics.get("rewards_margin", float("nan")),
    )  # fmt: skip
    return metrics
