"""LoRA (low-rank adapters, through peft) for every trained model, and QLoRA's 4-bit base.

With ``lora.r > 0`` a stage wraps the model it trains with :func:`apply_lora`: only the
adapters (and a reward model's or critic's ``score`` head) train, the base weights stay frozen.
The frozen base is then also the reference the stage compares against: the same model inside
:func:`adapters_disabled`, not a second copy. :func:`publishable` says what is saved: the merged
model (a plain transformers folder) or the adapter alone, with the base it applies to named in
the manifest. With ``lora.r == 0`` every function here leaves the model exactly as it was.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import BitsAndBytesConfig, PreTrainedModel

from rlhf.config import LoraConfig
from rlhf.modeling import models

log = logging.getLogger("rlhf.lora")

ALL_LINEAR = ["all-linear"]


def is_lora(model: torch.nn.Module) -> bool:
    # peft is imported only by apply_lora (seconds at every stage start otherwise): before
    # that, no model can be a peft model.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def apply_lora(model: PreTrainedModel, cfg: LoraConfig) -> PreTrainedModel:
    """``model`` with LoRA adapters on ``cfg.target_modules`` and only those trainable; ``model``
    itself when ``cfg.r == 0``. A sequence classifier (reward model, critic) keeps its
    freshly initialised ``score`` head trainable (peft's SEQ_CLS task saves it whole)."""
    if cfg.r == 0:
        return model
    import peft

    classifier = type(model).__name__.endswith("ForSequenceClassification")
    if cfg.quantize_4bit:  # casts norms to float32 and lets gradients reach the adapters' inputs
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets: str | list[str] = (
        "all-linear" if cfg.target_modules == ALL_LINEAR else cfg.target_modules
    )
    peft_config = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        task_type=peft.TaskType.SEQ_CLS if classifier else peft.TaskType.CAUSAL_LM,
    )
    wrapped = peft.get_peft_model(model, peft_config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info(
        "LoRA r=%d on %s: %d of %d parameters trainable (%.2f%%)",
        cfg.r, targets, trainable, total, 100.0 * trainable / max(total, 1),
    )  # fmt: skip
    return wrapped  # type: ignore[return-value]  # a PeftModel forwards to the model it wraps


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Inside, a LoRA model computes as its frozen base model (the reference); any other
    model is left as it is (a separate reference model is already the base)."""
    if is_lora(model):
        with model.disable_adapter():  # type: ignore[operator]
            yield
    else:
        yield


def unwrap(model: torch.nn.Module) -> Any:
    """The transformers model inside a LoRA model (adapters injected, still active), for code
    that reaches into its parts (``.base_model``, ``.score``); any other model itself."""
    return model.get_base_model() if is_lora(model) else model  # type: ignore[operator]


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight ``model`` computes with, named as in its transformers
    model: for an inference engine that loads transformers checkpoints (vLLM). A LoRA model's
    adapters are added into the base weights they modify (computed aside: the model is left as
    it is, so its frozen base never drifts by the rounding of merging and unmerging) and are
    not listed themselves; any other model's parameters are listed as they are. Tied weights
    are listed once, under their first name."""
    if not is_lora(model):
        yield from model.named_parameters()
        return
    base = model.get_base_model()  # type: ignore[operator]
    for name, param in base.named_parameters():
        if ".lora_" in name or ".original_module." in name:
            continue  # the adapters themselves; a copied head's frozen original
        name = name.replace(".modules_to_save.default.", ".")
        if ".base_layer." not in name:
            yield name, param
            continue
        owner, _, leaf = name.partition(".base_layer.")
        layer = base.get_submodule(owner)
        if leaf == "weight" and not layer.disable_adapters:
            for adapter in layer.active_adapters:
                if adapter in layer.lora_variant or layer.lora_bias.get(adapter, False):
                    raise NotImplementedError(
                        f"{owner}: only plain LoRA adapters can be merged for the rollout engine"
                    )
                if adapter in layer.lora_A and adapter not in layer.merged_adapters:
                    param = param + layer.get_delta_weight(adapter).to(param.dtype)
        yield f"{owner}.{leaf}", param


def publishable(
    model: PreTrainedModel, cfg: LoraConfig, base_model: str
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """What to save for a trained ``model`` and the manifest fields that say what it is.

    Not LoRA: ``model`` and no fields. ``publish: merged``: the adapters merged into the base
    weights (in place: the end of training), a plain transformers model. ``publish: adapter``:
    the LoRA model, whose ``save_pretrained`` writes the adapter files only; the manifest's
    ``lora_base_model`` (and peft's ``adapter_config.json``) name ``base_model``, the model it
    applies to."""
    if not is_lora(model):
        return model, {}
    fields = {"lora": {"r": cfg.r, "alpha": cfg.alpha, "publish": cfg.publish}}
    if cfg.publish == "merged":
        return model.merge_and_unload(), fields  # type: ignore[operator]
    model.peft_config["default"].base_model_name_or_path = base_model  # type: ignore[index]
    return model, {**fields, "lora_base_model": base_model}


def check_preset_base(cfg: LoraConfig, base_model: str) -> None:
    """A preset base is initialised afresh, never saved: an adapter for it applies to nothing,
    and there are no pretrained weights to quantize. Raised before training."""
    if cfg.r == 0 or not models.is_preset(base_model):
        return
    if cfg.publish == "adapter":
        raise ValueError(
            f"lora.publish=adapter: base_model {base_model} is a preset, initialised afresh and "
            "never saved, so an adapter alone could not be applied to it; publish 'merged'"
        )
    if cfg.quantize_4bit:
        raise ValueError(f"lora.quantize_4bit: base_model {base_model} is a preset, not weights")


def quantization_config(cfg: LoraConfig, dtype: str) -> BitsAndBytesConfig | None:
    """QLoRA's 4-bit NF4 loading settings when ``cfg.quantize_4bit``, else None. Raises before
    any model loads when this machine cannot run it (no CUDA, or no bitsandbytes). ``dtype``:
    the stage's, the 4-bit layers compute in it (bfloat16 for float32)."""
    if not cfg.quantize_4bit:
        return None
    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA device is available")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package is not installed")
    if missing:
        raise ValueError(
            "lora.quantize_4bit (QLoRA) needs CUDA and bitsandbytes: "
            + " and ".join(missing)
            + "; set lora.quantize_4bit=false to train LoRA on the full-precision base"
        )
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        # float32 training computes the 4-bit layers in bfloat16: NF4 gains nothing from more.
        bnb_4bit_compute_dtype=torch.bfloat16 if dtype == "float32" else models.DTYPES[dtype],
    )
