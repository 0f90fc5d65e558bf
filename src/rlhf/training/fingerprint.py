"""What makes a checkpoint this run's: the stage, its training settings and its inputs.

A checkpoint records the fingerprint of the run that wrote it (``meta.json``); a resume
compares it with the fingerprint of the run starting now, so a reused ``checkpoint_dir`` never
silently continues another config's, another data set's or another model's state. Config fields
that only say where checkpoints and outputs go, how often to log, validate or save, or which
device runs the job may change between a kill and a resume; every other field must not.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Config fields that may change between a kill and the resume (checked against every training
# config by tests/unit/test_fingerprint.py). Each leaves weights, optimizer, RNG and batch
# order as they would have been; any field not listed here is part of the fingerprint.
RESUME_SAFE_FIELDS: frozenset[str] = frozenset(
    {
        # Saving: how often, how many, and where (the folder itself is being checked).
        "checkpoint_every",
        "keep_checkpoints",
        "checkpoint_dir",
        # What happens to the result once trained.
        "publish_to",
        "log_model_artifacts",
        # Monitoring: metric and sample-table frequency. Validation runs under no_grad in eval
        # mode and draws no random numbers, so how often and in what batches it runs (a smaller
        # eval_batch_size is the fix for running out of memory) changes no training step.
        "log_every",
        "eval_every",
        "eval_batch_size",
        "sample_every",
        "samples_logged",
        # Diagnostics only: the gold reward is logged, never trained on; the guards only warn.
        "gold_reward",
        "entropy_floor",
        "length_drift",
        # Where it runs: checkpoints load onto any device (dtype, which changes the numbers,
        # is checked).
        "device",
        # Permission to run a model's own code; it changes no setting of the training.
        "trust_remote_code",
    }
)


class _Absent:
    """The value shown for a field one of the two fingerprints does not have."""

    def __repr__(self) -> str:
        return "(not recorded)"


ABSENT: Any = _Absent()


@dataclasses.dataclass(frozen=True)
class Difference:
    """One field whose value in the checkpoint differs from the current run's."""

    field: str  # "stage", "config.<name>" or "inputs.<name>"
    checkpointed: Any
    current: Any

    def __str__(self) -> str:
        return f"{self.field}: {self.checkpointed!r} in the checkpoint, {self.current!r} now"


def _location(value: Any) -> Any:
    """An input as given, except a local path that exists, which becomes absolute: ``data/x``
    and ``/work/data/x`` are the same input. URIs, hub ids and presets stay as given."""
    if isinstance(value, str) and "://" not in value and ":" not in value.split("/")[0]:
        path = Path(value)
        if path.exists():
            return str(path.resolve())
    return value


def run_fingerprint(stage: str, config: Any, inputs: Any) -> dict[str, Any]:
    """The JSON-ready fingerprint of a run: ``stage``, the fields of the ``config`` dataclass
    not in :data:`RESUME_SAFE_FIELDS`, and the locations in the ``inputs`` dataclass (the data
    and model paths the stage reads)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUME_SAFE_FIELDS}
    locations = {k: _location(v) for k, v in dataclasses.asdict(inputs).items()}
    fingerprint = {"stage": stage, "config": settings, "inputs": locations}
    # What a checkpoint's meta.json will read back (tuples as lists, and so on).
    return json.loads(json.dumps(fingerprint, default=str))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fingerprint_differences(
    checkpointed: Mapping[str, Any], current: Mapping[str, Any]
) -> list[Difference]:
    """Every field whose value differs between two fingerprints (``stage`` first, then in the
    current run's field order); a field only one of them has counts as a difference, with
    :data:`ABSENT` on the other side."""
    old, new = _flatten(checkpointed), _flatten(current)
    names = [*new, *(k for k in old if k not in new)]
    return [
        Difference(name, old.get(name, ABSENT), new.get(name, ABSENT))
        for name in names
        if old.get(name, ABSENT) != new.get(name, ABSENT)
    ]
