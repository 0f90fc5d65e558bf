"""What every training stage (SFT, reward model, DPO, PPO, GRPO) does before it loads a model:
seed, pick the device (this rank's GPU under torchrun), join the process group the engines
need, log its config as MLflow params, and find the checkpoint it resumes from, checked against
this run's fingerprint so that a reused ``checkpoint_dir`` fails fast."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import set_seed

from rlhf.config import flat_dict
from rlhf.tracking import Tracker
from rlhf.training import checkpoint as ckpt
from rlhf.training import distributed
from rlhf.training.checkpoint import checkpoint_root
from rlhf.training.engine import prepare_backend
from rlhf.training.fingerprint import run_fingerprint


class TrainingStart(NamedTuple):
    tracker: Tracker
    started: float  # time.time() when the stage began, for its "seconds" metric
    device: torch.device
    checkpoint_root: Path
    fingerprint: dict[str, Any]  # recorded by every checkpoint the stage saves
    resume_path: Path | None  # the newest checkpoint of this same run, or None: start afresh
    world: distributed.World  # this process's rank among the run's processes


def start_training(
    stage: str, config: Any, inputs: Any, output: str, tracker: Tracker | None
) -> TrainingStart:
    """Begin stage ``stage`` (its name in params and fingerprints) writing to ``output``."""
    tracker = tracker or Tracker()
    started = time.time()
    set_seed(config.seed)
    world = distributed.launched_world()
    device = distributed.device_for(world, config.device)
    prepare_backend(config.distributed, device)
    tracker.log_params({f"{stage}.{k}": v for k, v in flat_dict(config).items()})
    root = checkpoint_root(output, config.checkpoint_dir)
    fingerprint = run_fingerprint(stage, config, inputs)
    resume_path = ckpt.resume_checkpoint(root, fingerprint)
    return TrainingStart(tracker, started, device, root, fingerprint, resume_path, world)
