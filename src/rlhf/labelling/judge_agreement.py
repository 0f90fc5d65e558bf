"""How often a judge agrees with people on the pairs both labelled.

Human labels come from an export of the labelling app (``preferences.jsonl``: one row per
pair with ``task_id``, ``chosen_id``, ``rejected_id`` and ``labeller``). A human pair is
*compared* when the judge gave a pair on the same two candidates of the same task; it agrees
when the judge chose the same one. Each labeller's pair counts on its own, so a task labelled
by two people is compared twice. Human pairs the judge left tied (or on tasks it did not see)
are counted, not compared. The app's exports name a task ``<batch>/<task_id>`` (task ids are
unique within a batch only); such a human task is the judged task its ``<task_id>`` part names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import storage
from rlhf.data.errors import DataError
from rlhf.data.readers import read_rows
from rlhf.labelling.export import PREFERENCES_FILE, Pair

_FIELDS = ("task_id", "chosen_id", "rejected_id", "labeller")


@dataclass(frozen=True)
class HumanPair:
    task_id: str
    chosen_id: str
    rejected_id: str
    labeller: str


def read_human_pairs(uri: str) -> list[HumanPair]:
    """The pairs of an export folder (or its ``preferences.jsonl``), local or ``s3://``. A row
    without one of the audit fields is an error naming the file, line and field."""
    path = storage.local_path(uri)
    name = str(uri)
    if path.is_dir():
        storage.verify_folder(path)
        name = f"{name.rstrip('/')}/{PREFERENCES_FILE}"
        path = Path(path) / PREFERENCES_FILE
    pairs = []
    for location, row in read_rows(str(path)):
        values: list[Any] = []
        for field in _FIELDS:
            value = row.get(field)
            if not isinstance(value, str) or not value:
                raise DataError(
                    name, "must be a non-empty string (an export of labels)", location, field
                )
            values.append(value)
        pairs.append(HumanPair(*values))
    return pairs


def _judged_task(human_task: str, judged: set[str]) -> str:
    """``human_task`` itself when judged, else its part after a ``<batch>/`` prefix that is."""
    parts = human_task.split("/")
    for i in range(1, len(parts)):
        if (rest := "/".join(parts[i:])) in judged:
            return rest
    return human_task


def agreement(
    judge_pairs: Iterable[Pair], human: Sequence[HumanPair], judged_tasks: Iterable[str]
) -> dict[str, Any]:
    """``{"human_pairs", "compared", "agreed", "agreement" (None when nothing was compared),
    "judge_ties" (human pairs of ``judged_tasks`` the judge left tied), "by_labeller":
    {labeller: {"compared", "agreed", "agreement"}}}``."""
    winner = {
        (p.task.task_id, frozenset((p.chosen_id, p.rejected_id))): p.chosen_id for p in judge_pairs
    }
    tasks = set(judged_tasks)
    counts: dict[str, list[int]] = {}
    ties = 0
    for h in human:
        task_id = _judged_task(h.task_id, tasks)
        key = (task_id, frozenset((h.chosen_id, h.rejected_id)))
        if key not in winner:
            ties += task_id in tasks
            continue
        c = counts.setdefault(h.labeller, [0, 0])
        c[0] += 1
        c[1] += winner[key] == h.chosen_id
    compared = sum(c[0] for c in counts.values())
    agreed = sum(c[1] for c in counts.values())
    return {
        "human_pairs": len(human),
        "compared": compared,
        "agreed": agreed,
        "agreement": agreed / compared if compared else None,
        "judge_ties": ties,
        "by_labeller": {
            who: {"compared": n, "agreed": a, "agreement": a / n}
            for who, (n, a) in sorted(counts.items())
        },
    }
