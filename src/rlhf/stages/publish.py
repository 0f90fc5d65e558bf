"""Publishing a stage's output: atomically, manifest last, into the tracker, and optionally
to a destination of its own (an ``s3://`` prefix from the stage's ``publish_to``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf import storage
from rlhf.config import LoraConfig
from rlhf.modeling import lora, models
from rlhf.registry import MODEL_ARTIFACT_PATH
from rlhf.tracking import Tracker
from rlhf.training import distributed
from rlhf.training.engine import Engine

log = logging.getLogger("rlhf.publish")


def publish_copy(
    local: str | os.PathLike, destination: str | None, tracker: Tracker, what: str
) -> str | None:
    """Copy a finished output (file, or folder with its manifest) to ``destination``, when
    one is configured, and tag the stage run with where it went."""
    if not destination:
        return None
    storage.publish(local, destination)
    tracker.set_tags({f"rlhf.published.{what}": destination})
    log.info("published %s to %s", what, destination)
    return destination


def publish_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | os.PathLike,
    manifest: dict[str, Any],
    tracker: Tracker,
    extra_files: dict[str, Any] | None = None,
    log_artifacts: bool = True,
    publish_to: str | None = None,
    extra_models: dict[str, PreTrainedModel] | None = None,
) -> Path:
    """Write model + tokenizer (+ ``extra_files``: name -> bytes, written as they are, or a
    small JSON value; + ``extra_models`` in subfolders of those names, weights and config only)
    to ``out``; the folder appears complete, with ``manifest.json`` last, or not at all. Then
    copy it to ``publish_to`` (if set) and into the tracker's run; the manifest records both
    (the run id lets the model registry point a version at the logged copy)."""
    fields = dict(manifest)
    if log_artifacts and tracker.run_id:
        fields["mlflow_run_id"] = tracker.run_id
    if publish_to:
        fields["published_to"] = publish_to
    with storage.atomic_dir(out) as tmp:
        models.save_pretrained(model, tokenizer, tmp)
        for name, content in (extra_files or {}).items():
            if isinstance(content, bytes):  # a binary file, written as it is
                (tmp / name).write_bytes(content)
            else:
                text = json.dumps(content, indent=2, sort_keys=True)
                (tmp / name).write_text(text, encoding="utf-8")
        for name, extra in (extra_models or {}).items():
            extra.save_pretrained(tmp / name, safe_serialization=True)
        storage.write_manifest(tmp, fields)
    publish_copy(out, publish_to, tracker, "model")
    if log_artifacts:
        tracker.log_artifacts(out, MODEL_ARTIFACT_PATH)
    return Path(out)


def publish_trained(
    engine: Engine,
    tokenizer: PreTrainedTokenizerBase,
    out: str | os.PathLike,
    manifest: dict[str, Any],
    lora_config: LoraConfig,
    lora_base: str,
    **kwargs: Any,
) -> None:
    """:func:`publish_model` for a trained engine's model: every rank takes part in gathering
    its weights (ZeRO-3), rank 0 alone writes the folder, and no rank goes on before it is
    complete. A LoRA model is published as ``lora_config.publish`` says (merged, or the adapter
    for ``lora_base``)."""
    weights = engine.weights_to_publish()
    if distributed.is_main_process():
        if weights is not None:  # training is over: rank 0's model may hold them whole now
            models.take_weights(engine.model, weights)
        model, fields = lora.publishable(engine.model, lora_config, lora_base)
        publish_model(model, tokenizer, out, {**fields, **manifest}, **kwargs)
    distributed.barrier()


def finish_training(
    metrics: dict[str, float],
    checkpoint_root: Path,
    checkpoint_dir: str | None,
    tracker: Tracker,
) -> None:
    """After a training stage has published its model: drop its checkpoints when they sit
    beside the output (the published model supersedes them; a configured ``checkpoint_dir`` is
    kept), and log the stage's result as ``final/*`` metrics. Rank 0 alone does it."""
    if not distributed.is_main_process():
        return
    if not checkpoint_dir:
        shutil.rmtree(checkpoint_root, ignore_errors=True)
    tracker.log_metrics({f"final/{k}": v for k, v in metrics.items()})
