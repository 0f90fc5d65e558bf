"""Stage 1: supervised fine-tuning on demonstrations.

Causal-LM cross-entropy on response tokens only (prompts and padding are masked), over
length-grouped batches; AdamW with warmup + cosine decay, gradient accumulation and clipping;
validation loss and perplexity; checkpoints every N steps and resume after a kill.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from rlhf.algorithms.sft_loss import response_nll
from rlhf.config import SFTConfig
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import Encoded, encode_conversation
from rlhf.modeling.forward import heldout_nll
from rlhf.modeling.packed import PackedEncoded
from rlhf.modeling.padding import collate
from rlhf.modeling.tokenizer import train_bpe_tokenizer
from rlhf.stages.publish import finish_training, publish_trained
from rlhf.stages.specs import ModelOutputs, SFTInputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training import distributed
from rlhf.training.batching import length_grouped_batches
from rlhf.training.engine import build_engine, sharded_loading
from rlhf.training.loop import train

log = logging.getLogger("rlhf.sft")


def _tokenizer(cfg: SFTConfig, train_rows: Any):
    if cfg.tokenizer:
        return models.load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)
    if models.is_preset(cfg.base_model):
        texts = (m["content"] for row in train_rows for m in row["messages"])
        log.info("training a %d-token byte-level BPE on the SFT text", cfg.vocab_size)
        return train_bpe_tokenizer(texts, cfg.vocab_size)
    return models.load_tokenizer(cfg.base_model, cfg.trust_remote_code)


def run(
    config: SFTConfig, inputs: SFTInputs, outputs: ModelOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    # Before the tokenizer a checkpoint folder may hold is reused.
    tracker, started, device, ckpt_root, fingerprint, resume_path, _ = start_training(
        "sft", config, inputs, outputs.model, tracker
    )

    train_rows = load_split(inputs.data, "train")
    val_rows = load_split(inputs.data, "validation")
    if len(train_rows) == 0:
        raise ValueError(f"{inputs.data}: the train split is empty; nothing to fine-tune on")
    # A resumed run must reuse the exact tokenizer it began with; rank 0 makes it, the other
    # ranks read what it saved.
    saved_tokenizer = ckpt_root / "tokenizer"

    def make_or_load_tokenizer() -> Any:
        if saved_tokenizer.exists():
            return models.load_tokenizer(str(saved_tokenizer))
        made = _tokenizer(config, train_rows)
        made.save_pretrained(saved_tokenizer)
        return made

    tokenizer = distributed.main_first(make_or_load_tokenizer)
    lora.check_preset_base(config.lora, config.base_model)
    quantization = lora.quantization_config(config.lora, config.dtype)
    with sharded_loading(config.distributed):
        if models.is_preset(config.base_model):
            model = models.build_from_preset(
                config.base_model, tokenizer, config.max_length, config.dtype
            )
        else:
            model = models.load_causal_lm(
                config.base_model, config.dtype, config.trust_remote_code, quantization
            )
    model = lora.apply_lora(model, config.lora)
    model.to(device)
    log.info("model: %.2fM parameters", models.parameter_count(model) / 1e6)
    engine = build_engine(
        model, config.lr, config.weight_decay, config.max_grad_norm, config.distributed, device
    )

    def encode(rows: Any) -> PackedEncoded:
        out = (
            encode_conversation(tokenizer, r["messages"], config.max_length, config.chat_template)
            for r in rows
        )
        # A truncated-away answer trains nothing. Packed: 5 bytes a token, not a Python list.
        return PackedEncoded(e for e in out if sum(e.loss_mask) > 0)

    train_set, val_set = encode(train_rows), encode(val_rows)
    pad_id = tokenizer.pad_token_id
    lengths = train_set.lengths()

    def batches_for_epoch(epoch: int) -> list[list[Encoded]]:
        groups = length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
        return [[train_set[i] for i in g] for g in groups]

    def loss_fn(batch: list[Encoded]) -> tuple[torch.Tensor, dict[str, float]]:
        b = {k: v.to(device) for k, v in collate(batch, pad_id).items()}
        logits = engine.module(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        return response_nll(logits, b["input_ids"], b["loss_mask"]), {}

    def evaluate() -> dict[str, float]:
        loss = heldout_nll(model, val_set, pad_id, config.eval_batch_size)
        return {"val/loss": loss, "val/perplexity": math.exp(min(loss, 50.0))}

    result = train(
        engine,
        batches_for_epoch,
        loss_fn,
        evaluate,
        config,
        ckpt_root,
        tracker,
        stage="sft",
        fingerprint=fingerprint,
        resume_path=resume_path,
        batch_weight=lambda batch: sum(sum(e.loss_mask[1:]) for e in batch),  # tokens
    )
    metrics = {
        "val_loss_start": result.initial_metrics["val/loss"],
        "val_loss": result.final_metrics["val/loss"],
        "val_perplexity": result.final_metrics["val/perplexity"],
        "train_examples": float(len(train_set)),
        "steps": float(result.steps),
        "seconds": time.time() - started,
    }
    model.config.use_cache = True
    publish_trained(
        engine,
        tokenizer,
        outputs.model,
        lora_config=config.lora,
        lora_base=config.base_model,
        manifest={
            "artifact": "sft_model",
            "base_model": config.base_model,
            "data": str(inputs.data),
            "data_sha256": manifest_checksum(inputs.data),
            "metrics": metrics,
            "chat_template": config.chat_template,
        },
        tracker=tracker,
        log_artifacts=config.log_model_artifacts,
        publish_to=config.publish_to,
    )
    finish_training(metrics, ckpt_root, config.checkpoint_dir, tracker)
    log.debug("sft: val loss %.3f -> %.3f", metrics["val_loss_start"], metrics["val_loss"])
    return metrics
