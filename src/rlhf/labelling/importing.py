"""``rlhf label import``: a labelling batch's tasks into the database, gold orders with them.

A gold file (JSONL, local or ``s3://``) names tasks of the batch whose correct order is known:
``{"task_id": "t000003", "ranking": ["c2", "c0", "c3", "c1"]}`` (every candidate id, best
first). Gold tasks go into every labeller's queue, among the others, to measure each labeller
against a known answer. Importing the same batch again changes nothing; a task id of the batch
that comes back with other content is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf.data.errors import DataError, EmptyInput
from rlhf.data.readers import read_rows
from rlhf.labelling.batch import Task
from rlhf.labelling.db import TaskRow


@dataclass(frozen=True)
class Imported:
    created: int
    unchanged: int
    gold: int


def read_gold(uri: str) -> dict[str, list[str]]:
    """task id -> candidate ids best first, from a gold file; bad rows raise DataError."""
    gold: dict[str, list[str]] = {}
    for location, row in read_rows(uri):
        task_id, ranking = row.get("task_id"), row.get("ranking")
        if not isinstance(task_id, str) or not task_id:
            raise DataError(uri, "must be a non-empty string", location, "task_id")
        if task_id in gold:
            raise DataError(uri, f"repeats task {task_id!r}", location, "task_id")
        if (
            not isinstance(ranking, list)
            or len(ranking) < 2
            or not all(isinstance(c, str) for c in ranking)
            or len(set(ranking)) != len(ranking)
        ):
            raise DataError(
                uri,
                "must list the task's candidate ids, best first, each once",
                location,
                "ranking",
            )
        gold[task_id] = ranking
    if not gold:
        raise EmptyInput(uri, "no gold task in it")
    return gold


def import_tasks(
    session: Session,
    tasks: Iterable[Task],
    batch: str,
    labellers_wanted: int = 2,
    gold: Mapping[str, list[str]] | None = None,
    source: str = "",
) -> Imported:
    """Add the batch's tasks (``batch`` names it in the database) with their gold orders."""
    if labellers_wanted < 1:
        raise ValueError("--labellers-per-task must be at least 1")
    gold = dict(gold or {})
    existing = {
        row.task_id: row for row in session.scalars(select(TaskRow).where(TaskRow.batch == batch))
    }
    created = unchanged = gold_count = 0
    for task in tasks:
        candidates = [{"id": c.id, "text": c.text, "source": c.source} for c in task.candidates]
        order = gold.pop(task.task_id, None)
        if order is not None:
            ids = [c.id for c in task.candidates]
            if sorted(order) != sorted(ids):
                raise ValueError(
                    f"gold ranking of task {task.task_id!r} must name each candidate {ids} once,"
                    f" got {order}"
                )
        row = existing.get(task.task_id)
        if row is not None:
            if (row.prompt, row.candidates, row.gold) != (list(task.prompt), candidates, order):
                raise ValueError(
                    f"{source or batch}: task {task.task_id!r} is already in batch {batch!r} with"
                    " other content; import it under another name (--name)"
                )
            unchanged += 1
            continue
        session.add(
            TaskRow(
                batch=batch,
                task_id=task.task_id,
                prompt=[dict(m) for m in task.prompt],
                candidates=candidates,
                gold=order,
                labellers_wanted=labellers_wanted,
            )
        )
        created += 1
        gold_count += order is not None
    if gold:
        raise ValueError(f"gold names tasks that are not in the batch: {sorted(gold)}")
    if created + unchanged == 0:
        raise EmptyInput(source or batch, "no task to import")
    session.flush()
    return Imported(created, unchanged, gold_count)
