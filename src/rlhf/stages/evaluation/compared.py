"""The models an evaluation compares: their names in the metrics, their folders, and
ModelResult, one model's sampled and scored responses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf.registry import CHAMPION
from rlhf.stages.specs import EvalInputs

CANDIDATE = "candidate"
REFERENCE = "reference"
# The policy holding the registry alias "champion", sampled like the others for the gate.
CHAMPION_MODEL = CHAMPION


@dataclass
class ModelResult:
    """One model's responses and their scores. Every list is prompt-major: entry
    ``p * samples_per_prompt + s`` is sample s for prompt p."""

    name: str
    path: str
    responses: list[str]
    lengths: list[int]  # response tokens, EOS included
    rm_scores: list[float] | None  # None without a reward model
    gold_scores: list[float] | None = None
    perplexity: float | None = None


def model_names(others: Sequence[str]) -> list[str]:
    """Names for the ``others`` folders: the folder name with characters outside
    ``[A-Za-z0-9_.-]`` replaced by ``_``; a clash (or an empty name) gets ``other<i>`` (1-based)."""
    used = {CANDIDATE, REFERENCE, CHAMPION_MODEL}
    names = []
    for i, path in enumerate(others, start=1):
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(str(path).rstrip("/")).name)
        if not name.strip("._") or name in used:
            name = f"other{i}"
            while name in used:
                name += "_"
        used.add(name)
        names.append(name)
    return names


def compared_models(inputs: EvalInputs, champion: str | None = None) -> dict[str, str]:
    """Name -> folder of every compared model, in the order they are sampled and Elo plays
    them: candidate, reference, the champion's fetched folder (when there is one), the others."""
    others = list(inputs.others or [])
    names = [CANDIDATE, REFERENCE, *model_names(others)]
    paths = [inputs.candidate, inputs.reference, *others]
    if champion is not None:
        names.insert(2, CHAMPION_MODEL)
        paths.insert(2, champion)
    return dict(zip(names, paths, strict=True))
