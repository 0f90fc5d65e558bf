"""Tasks and labellers the labelling tests start from, written through the library."""

from __future__ import annotations

from sqlalchemy import select

from rlhf.labelling.accounts import add_labeller
from rlhf.labelling.assignments import fill_queues
from rlhf.labelling.batch import Candidate, Task
from rlhf.labelling.db import Assignment, Labeller, TaskRow, open_engine, transaction
from rlhf.labelling.importing import import_tasks

PROMPTS = ("How do I keep fresh basil from wilting?", "How do I keep cut tulips fresh?")
ANSWERS = (
    "Trim the stems and stand them in a glass of water at room temperature, loosely covered.",
    "Keep it cool and change the water every day or two.",
    "Wrap it in a dry paper towel and use it within two days.",
    "Plants are green.",
)


def make_tasks(n: int, k: int = 4) -> list[Task]:
    """n tasks with k answers each; prompts differ between tasks, answers within a task."""
    return [
        Task(
            f"t{i:03d}",
            ({"role": "user", "content": PROMPTS[i % 2] + (f" ({i})" if i >= 2 else "")},),
            tuple(Candidate(f"c{j}", ANSWERS[j % 4] + " !" * (j // 4), "sft") for j in range(k)),
        )
        for i in range(n)
    ]


def seed(
    db: str,
    labellers: list[str],
    tasks: list[Task],
    per_task: int = 2,
    gold: dict[str, list[str]] | None = None,
    admin: str | None = None,
) -> dict[str, str]:
    """Labellers (and an admin) and the tasks assigned to them; returns name -> token."""
    engine = open_engine(db)
    with transaction(engine) as session:
        tokens = {name: add_labeller(session, name) for name in labellers}
        if admin:
            tokens[admin] = add_labeller(session, admin, admin=True)
        import_tasks(session, tasks, "b1", per_task, gold)
        fill_queues(session)
    engine.dispose()
    return tokens


def assignments_of(db: str) -> list[tuple[int, str, str]]:
    """(assignment id, labeller, task id) of every assignment."""
    engine = open_engine(db)
    with transaction(engine) as session:
        rows = session.execute(
            select(Assignment.id, Labeller.name, TaskRow.task_id)
            .join(Labeller, Assignment.labeller_id == Labeller.id)
            .join(TaskRow, Assignment.task_id == TaskRow.id)
            .order_by(Assignment.id)
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]
