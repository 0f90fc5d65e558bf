"""The candidate's training history (written by PPO and GRPO), plotted in the report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.modeling import models

log = logging.getLogger("rlhf.evaluate")


@dataclass
class TrainingHistory:
    file: str  # the file's name in the model folder, named by the report when it is missing
    entries: list[dict[str, Any]] = field(default_factory=list)  # {"step", metric: value}


def read_training_history(model_uri: str, file: str) -> TrainingHistory:
    """The model folder's ``file`` (a list of {"step", metric: value} dicts); no entries when
    the folder has none (an SFT model, a hub id) or it cannot be read."""
    try:
        path = Path(models.resolve(model_uri)) / file
        if not path.is_file():
            return TrainingHistory(file)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("evaluate: cannot read the training history of %s: %s", model_uri, err)
        return TrainingHistory(file)
    entries = (
        [h for h in data if isinstance(h, dict) and "step" in h] if isinstance(data, list) else []
    )
    return TrainingHistory(file, entries)
