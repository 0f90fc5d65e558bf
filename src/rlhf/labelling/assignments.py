"""Labellers' queues: who labels which task, in what order, and their submissions.

Each task goes to ``labellers_wanted`` labellers (default 2, so that agreement can be
measured), those with the fewest assignments first; a gold task goes to every labeller. A queue
is shuffled per labeller, stably (a hash of labeller and task), so gold tasks sit among the
others, and so is the order of a task's answers on screen. Filling is idempotent: it runs after
an import and when a labeller is added.

A submission is one ranking of every answer (best first) with a 1-7 score for each and optional
flags, or a skip. There is at most one per assignment (a unique constraint): sending the same
one again is acknowledged as saved, sending a different one is refused.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhf.labelling.accounts import Account
from rlhf.labelling.db import Assignment, Labeller, Submission, TaskRow
from rlhf.labelling.export import check_scores

FLAGS = ("unsafe", "nonsense")


class Refused(Exception):
    """A request the app will not carry out; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Progress:
    assigned: int
    done: int
    skipped: int

    def to_json(self) -> dict[str, int]:
        return {"assigned": self.assigned, "done": self.done, "skipped": self.skipped}


def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "big") >> 1


def display_order(labeller: str, task: TaskRow) -> list[str]:
    """The candidate ids of ``task`` in the order ``labeller`` sees them (stable, shuffled)."""
    ids = [c["id"] for c in task.candidates]
    random.Random(f"{labeller}/{task.batch}/{task.task_id}").shuffle(ids)
    return ids


def fill_queues(session: Session) -> int:
    """Assign every task to as many labellers as it wants (gold: to all); returns how many
    assignments were made. Tasks short of labellers get them when labellers are added."""
    people = list(session.scalars(select(Labeller).where(Labeller.admin.is_(False))))
    if not people:
        return 0
    load = {p.id: 0 for p in people}
    for labeller_id, count in session.execute(
        select(Assignment.labeller_id, func.count()).group_by(Assignment.labeller_id)
    ):
        if labeller_id in load:
            load[labeller_id] = count
    have: dict[int, set[int]] = {}
    for task_id, labeller_id in session.execute(select(Assignment.task_id, Assignment.labeller_id)):
        have.setdefault(task_id, set()).add(labeller_id)
    made = 0
    for task in session.scalars(select(TaskRow).order_by(TaskRow.id)):
        assigned = have.get(task.id, set())
        wanted = len(people) if task.gold is not None else task.labellers_wanted
        free = sorted(
            (p for p in people if p.id not in assigned), key=lambda p: (load[p.id], p.name)
        )
        for person in free[: max(0, wanted - len(assigned))]:
            position = _stable_int(person.name, task.batch, task.task_id)
            session.add(Assignment(task_id=task.id, labeller_id=person.id, position=position))
            load[person.id] += 1
            made += 1
    session.flush()
    return made


def progress(session: Session, labeller_id: int) -> Progress:
    assigned = session.scalar(
        select(func.count()).select_from(Assignment).where(Assignment.labeller_id == labeller_id)
    )
    rows = session.execute(
        select(Submission.skipped, func.count())
        .join(Assignment, Submission.assignment_id == Assignment.id)
        .where(Assignment.labeller_id == labeller_id)
        .group_by(Submission.skipped)
    )
    counts = {bool(skipped): n for skipped, n in rows}
    return Progress(assigned or 0, counts.get(False, 0), counts.get(True, 0))


def next_task(session: Session, account: Account) -> dict[str, Any] | None:
    """The labeller's next unanswered assignment, as the page shows it (no candidate source,
    no gold marker), or None when the queue is done."""
    row = session.execute(
        select(Assignment, TaskRow)
        .join(TaskRow, Assignment.task_id == TaskRow.id)
        .outerjoin(Submission, Submission.assignment_id == Assignment.id)
        .where(Assignment.labeller_id == account.id, Submission.id.is_(None))
        .order_by(Assignment.position, Assignment.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    assignment, task = row
    text = {c["id"]: c["text"] for c in task.candidates}
    return {
        "assignment": assignment.id,
        "prompt": task.prompt,
        "answers": [{"id": cid, "text": text[cid]} for cid in display_order(account.name, task)],
    }


def _own_assignment(session: Session, account: Account, assignment_id: int) -> TaskRow:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None:
        raise Refused(404, f"there is no assignment {assignment_id}")
    if assignment.labeller_id != account.id:
        raise Refused(
            403, f"assignment {assignment_id} is another labeller's task: you can submit only yours"
        )
    task = session.get(TaskRow, assignment.task_id)
    assert task is not None  # a foreign key
    return task


def check_submission(ids: list[str], body: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a ranking submission, or ``Refused(422)`` saying what is wrong."""
    ranking, scores, flags = body.get("ranking"), body.get("scores"), body.get("flags") or {}
    if not isinstance(ranking, list) or not all(isinstance(c, str) for c in ranking):
        raise Refused(422, "ranking must be a list of answer ids, best first")
    missing = [c for c in ids if c not in ranking]
    unknown = [c for c in ranking if c not in ids]
    if missing or unknown or len(ranking) != len(ids):
        raise Refused(
            422,
            f"incomplete ranking: rank each of the {len(ids)} answers exactly once"
            + (f" (missing {missing})" if missing else "")
            + (f" (not answers of this task: {unknown})" if unknown else ""),
        )
    if not isinstance(scores, Mapping):
        raise Refused(422, "scores must map each answer id to an integer from 1 to 7")
    try:
        check_scores(scores, ids)
    except ValueError as e:
        raise Refused(422, str(e)) from None
    if not isinstance(flags, Mapping) or any(
        c not in ids or not isinstance(f, list) or not set(f) <= set(FLAGS)
        for c, f in flags.items()
    ):
        raise Refused(422, f"flags must map answer ids to lists of {list(FLAGS)}")
    return {
        "ranking": list(ranking),
        "scores": {c: scores[c] for c in ids},
        "flags": {c: sorted(set(f)) for c, f in flags.items() if f},
    }


def _same(stored: Submission, wanted: Mapping[str, Any]) -> bool:
    return (
        bool(stored.skipped) == wanted["skipped"]
        and stored.ranking == wanted.get("ranking")
        and stored.scores == wanted.get("scores")
        and (stored.flags or {}) == (wanted.get("flags") or {})
    )


def submit(session: Session, account: Account, assignment_id: int, body: Mapping[str, Any]) -> bool:
    """Store the labeller's answer to their assignment (``body``: ranking, scores, flags; or
    ``{"skip": true, "reason": ...}``). Returns True when stored now, False when the same
    answer was stored before. The caller commits; a concurrent duplicate shows as an
    ``IntegrityError`` on commit, and calling this again then finds the stored answer."""
    task = _own_assignment(session, account, assignment_id)
    if body.get("skip") is True:
        reason = body.get("reason")
        wanted: dict[str, Any] = {
            "skipped": True,
            "reason": reason if isinstance(reason, str) else None,
        }
    else:
        wanted = {"skipped": False, **check_submission([c["id"] for c in task.candidates], body)}
    stored = session.scalar(select(Submission).where(Submission.assignment_id == assignment_id))
    if stored is not None:
        return _already(stored, wanted, assignment_id)
    session.add(Submission(assignment_id=assignment_id, **wanted))
    session.flush()
    return True


def _already(stored: Submission, wanted: Mapping[str, Any], assignment_id: int) -> bool:
    if _same(stored, wanted):
        return False
    raise Refused(
        409,
        f"assignment {assignment_id} was answered already"
        f" (at {stored.submitted_at:%Y-%m-%d %H:%M:%S}); an answer cannot be changed",
    )
