"""Publishing a trained model folder: atomically, manifest last, and into the tracker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf import models, storage
from rlhf.tracking import Tracker


def publish_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | os.PathLike,
    manifest: dict[str, Any],
    tracker: Tracker,
    extra_files: dict[str, Any] | None = None,
    log_artifacts: bool = True,
) -> Path:
    """Write model + tokenizer (+ small JSON ``extra_files``) to ``out``; the folder appears
    complete, with ``manifest.json`` last, or not at all."""
    with storage.atomic_dir(out) as tmp:
        models.save_pretrained(model, tokenizer, tmp)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2, sort_keys=True), encoding="utf-8")
        storage.write_manifest(tmp, manifest)
    if log_artifacts:
        tracker.log_artifacts(out, "model")
    return Path(out)


def checkpoint_root(out: str | os.PathLike, configured: str | None) -> Path:
    """Checkpoints go where the config says, else beside the output as ``<out>.checkpoints``."""
    return Path(configured) if configured else Path(f"{os.fspath(out).rstrip('/')}.checkpoints")
