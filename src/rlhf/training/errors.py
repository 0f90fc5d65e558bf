"""Errors a training stage stops with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhf.training.fingerprint import Difference


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the newest checkpoint predates it and is still good."""


class CheckpointMismatchError(ValueError):
    """The newest checkpoint in the checkpoint folder was written by another run (another
    stage, training settings or inputs); resuming from it would continue someone else's state.
    """

    def __init__(self, root: Path, checkpoint: Path, differences: Sequence[Difference]) -> None:
        self.root = root
        self.checkpoint = checkpoint
        self.differences = list(differences)
        lines = "\n".join(f"  {d}" for d in self.differences)
        super().__init__(
            f"checkpoint {checkpoint} was written by a different run, so this run will not "
            f"resume from it:\n{lines}\n"
            f"Use a fresh checkpoint_dir for this run, or delete {root} to start over "
            f"(or rerun with the checkpoint's values to resume it)."
        )
