"""The feedback export: labelled tasks as preference pairs that ``rlhf prepare`` reads.

People (the labelling app) and judges (RLAIF) both end here. A ranking of K answers, best
first, gives its K(K-1)/2 pairs (A > B > C > D gives A>B, A>C, A>D, B>C, B>D, C>D); answers
ranked equal give no pair with each other. With 1-7 scores, a pair's ``margin`` is the score
difference divided by 6 (0 to 1; the reward model's margin loss reads it), absent without
scores. An export is a folder, local or ``s3://``, published complete or not at all::

    preferences.jsonl   one pair per line, the ``preference`` format of docs/data-formats.md:
        {"prompt": [{"role": "user", "content": "..."}], "chosen": "...", "rejected": "...",
         "margin": 0.5, "task_id": "t000001", "labeller": "alice", "chosen_id": "c2",
         "rejected_id": "c0", "agreement": 0.83}
    manifest.json       written last: {"artifact": "feedback_export", "pairs": N, "tasks": T,
                        "labellers": [...], ...the writer's fields, files}

``task_id``, ``labeller``, ``chosen_id``, ``rejected_id`` and ``agreement`` (the labeller's
agreement with others, when measured) are for audit; ``rlhf prepare`` ignores keys a format does
not use, so ``rlhf prepare --preferences <export>/preferences.jsonl`` reads the file as it is.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.data.errors import EmptyInput
from rlhf.labelling.batch import Task

PREFERENCES_FILE = "preferences.jsonl"
ARTIFACT = "feedback_export"
SCORE_MIN, SCORE_MAX = 1, 7


@dataclass(frozen=True)
class Pair:
    """One preference between two candidates of a task, by one labeller (or judge)."""

    task: Task
    labeller: str
    chosen_id: str
    rejected_id: str
    margin: float | None = None
    agreement: float | None = None

    def to_json(self) -> dict[str, Any]:
        text = {c.id: c.text for c in self.task.candidates}
        return {
            "prompt": [dict(m) for m in self.task.prompt],
            "chosen": text[self.chosen_id],
            "rejected": text[self.rejected_id],
            "margin": self.margin,
            "task_id": self.task.task_id,
            "labeller": self.labeller,
            "chosen_id": self.chosen_id,
            "rejected_id": self.rejected_id,
            "agreement": self.agreement,
        }


def score_margin(better: int, worse: int) -> float:
    """The margin of a pair from two 1-7 scores: their difference over the scale's span (6)."""
    return (better - worse) / (SCORE_MAX - SCORE_MIN)


def ranking_pairs(
    task: Task,
    labeller: str,
    ranks: Mapping[str, int],
    scores: Mapping[str, int] | None = None,
    agreement: float | None = None,
) -> Iterator[Pair]:
    """The pairs of one ranking: ``ranks`` maps every candidate id of ``task`` to its rank (1 is
    best; equal ranks are ties and give no pair). A pair whose scores contradict its ranks
    (the better-ranked answer scored lower) gets no margin."""
    ids = [c.id for c in task.candidates]
    if sorted(ranks) != sorted(ids):
        raise ValueError(f"task {task.task_id}: ranks must name each candidate {ids} once")
    ordered = sorted(ids, key=lambda i: ranks[i])
    for a, better in enumerate(ordered):
        for worse in ordered[a + 1 :]:
            if ranks[better] == ranks[worse]:
                continue
            margin = None
            if scores is not None and scores[better] >= scores[worse]:
                margin = score_margin(scores[better], scores[worse])
            yield Pair(task, labeller, better, worse, margin, agreement)


def write_export(pairs: Iterable[Pair], destination: str, fields: Mapping[str, Any]) -> str:
    """Publish ``pairs`` as an export folder at ``destination`` (local or ``s3://``), complete or
    not at all, ``fields`` (thresholds, sources, agreement summary) in the manifest. No pair is
    an error: an empty export is never written."""
    with tempfile.TemporaryDirectory(prefix="rlhf-export-") as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        count, tasks, labellers = 0, set(), set()
        with open(folder / PREFERENCES_FILE, "w", encoding="utf-8") as f:
            for pair in pairs:
                f.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
                count += 1
                tasks.add(pair.task.task_id)
                labellers.add(pair.labeller)
        if count == 0:
            raise EmptyInput(destination, "no preference pair to export")
        storage.write_manifest(
            folder,
            {
                **fields,
                "artifact": ARTIFACT,
                "pairs": count,
                "tasks": len(tasks),
                "labellers": sorted(labellers),
            },
        )
        storage.publish(folder, destination)
    return destination


def check_scores(scores: Mapping[str, int], ids: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``scores`` gives each id an integer from 1 to 7."""
    if sorted(scores) != sorted(ids):
        raise ValueError(f"scores must name each candidate {list(ids)} once")
    for cid, s in scores.items():
        if isinstance(s, bool) or not isinstance(s, int) or not SCORE_MIN <= s <= SCORE_MAX:
            raise ValueError(f"score of {cid!r} must be an integer from 1 to 7, got {s!r}")
