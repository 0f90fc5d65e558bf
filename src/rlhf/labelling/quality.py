"""The quality report: what was labelled, how well labellers agree, who falls below a bar.

Read from the database (:func:`read_labels`), measured with :mod:`rlhf.labelling.agreement`:
the pair agreement between labellers and Krippendorff's alpha over rankings, then per labeller
their progress, flags, agreement with the others and with gold tasks. :func:`exclusions`
names the labellers an export leaves out under ``--min-agreement`` and why. The app's report
page and ``rlhf label stats`` show the same report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rlhf.labelling import agreement
from rlhf.labelling.batch import Candidate, Task
from rlhf.labelling.db import Assignment, Labeller, Submission, TaskRow


@dataclass(frozen=True)
class Ranking:
    """One labeller's ranking of one task, with their scores and flags."""

    task_key: str
    labeller: str
    order: list[str]  # candidate ids, best first
    scores: dict[str, int]
    flags: dict[str, list[str]]


@dataclass
class Labels:
    """Everything labelled so far, as the agreement measures and the export read it."""

    tasks: dict[str, Task] = field(default_factory=dict)  # "batch/task_id" -> Task
    rankings: list[Ranking] = field(default_factory=list)
    gold: dict[str, list[str]] = field(default_factory=dict)  # task key -> order
    labellers: list[str] = field(default_factory=list)
    assigned: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def by_task(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for r in self.rankings:
            out.setdefault(r.task_key, {})[r.labeller] = agreement.ranks_of(r.order)
        return out


def task_key(row: TaskRow) -> str:
    return f"{row.batch}/{row.task_id}"


def read_labels(session: Session) -> Labels:
    labels = Labels()
    rows = {}
    for row in session.scalars(select(TaskRow).order_by(TaskRow.id)):
        key = task_key(row)
        rows[row.id] = key
        labels.tasks[key] = Task(
            key,
            tuple(dict(m) for m in row.prompt),
            tuple(Candidate(c["id"], c["text"], c.get("source", "")) for c in row.candidates),
        )
        if row.gold is not None:
            labels.gold[key] = list(row.gold)
    labels.labellers = list(
        session.scalars(
            select(Labeller.name).where(Labeller.admin.is_(False)).order_by(Labeller.name)
        )
    )
    for name, count in session.execute(
        select(Labeller.name, func.count())
        .join(Assignment, Assignment.labeller_id == Labeller.id)
        .group_by(Labeller.name)
    ):
        labels.assigned[name] = count
    answered = session.execute(
        select(Submission, Assignment.task_id, Labeller.name)
        .join(Assignment, Submission.assignment_id == Assignment.id)
        .join(Labeller, Assignment.labeller_id == Labeller.id)
        .order_by(Assignment.task_id, Labeller.name)
    )
    for sub, task_id, name in answered:
        if sub.skipped:
            labels.skipped[name] += 1
            continue
        labels.rankings.append(
            Ranking(rows[task_id], name, list(sub.ranking), dict(sub.scores), dict(sub.flags or {}))
        )
    return labels


def _measure(found: agreement.Agreement | None) -> dict[str, Any]:
    found = found or agreement.Agreement()
    return {"rate": found.rate, "agreed": found.agreed, "pairs": found.pairs}


def report(labels: Labels) -> dict[str, Any]:
    """The quality report as JSON: overall agreement and alpha, then one entry per labeller."""
    by_task = labels.by_task()
    gold = {k: agreement.ranks_of(v) for k, v in labels.gold.items()}
    with_others = agreement.agreement_with_others(by_task)
    with_gold = agreement.agreement_with_gold(by_task, gold)
    done = Counter(r.labeller for r in labels.rankings)
    flags: dict[str, Counter[str]] = {}
    for r in labels.rankings:
        for names in r.flags.values():
            flags.setdefault(r.labeller, Counter()).update(names)
    people = sorted(set(labels.labellers) | set(done))
    return {
        "tasks": len(labels.tasks),
        "gold_tasks": len(labels.gold),
        "rankings": len(labels.rankings),
        "tasks_ranked_by_two_or_more": sum(len(v) >= 2 for v in by_task.values()),
        "pair_agreement": _measure(agreement.overall_agreement(by_task)),
        "krippendorff_alpha": agreement.ranking_alpha(by_task),
        "labellers": [
            {
                "name": name,
                "assigned": labels.assigned[name],
                "done": done[name],
                "skipped": labels.skipped[name],
                "flags": dict(flags.get(name, {})),
                "agreement_with_others": _measure(with_others.get(name)),
                "agreement_with_gold": _measure(with_gold.get(name)),
            }
            for name in people
        ],
    }


def exclusions(quality: dict[str, Any], min_agreement: float | None) -> dict[str, str]:
    """Labellers whose agreement with the others or with gold is below ``min_agreement``, with
    the reason. A labeller with no measure (no shared or gold task yet) is kept."""
    if min_agreement is None:
        return {}
    out = {}
    for person in quality["labellers"]:
        reasons = []
        for measure, words in (
            ("agreement_with_others", "agreement with other labellers"),
            ("agreement_with_gold", "agreement with gold tasks"),
        ):
            found = person[measure]
            if found["rate"] is not None and found["rate"] < min_agreement:
                reasons.append(
                    f"{words} {found['rate']:.2f} ({found['agreed']}/{found['pairs']} pairs)"
                    f" < {min_agreement:g}"
                )
        if reasons:
            out[person["name"]] = "; ".join(reasons)
    return out


def format_report(quality: dict[str, Any]) -> str:
    """The report as text for ``rlhf label stats``."""

    def pct(m: dict[str, Any]) -> str:
        return "-" if m["rate"] is None else f"{m['rate']:.1%} ({m['agreed']}/{m['pairs']})"

    alpha = quality["krippendorff_alpha"]
    lines = [
        f"tasks: {quality['tasks']} ({quality['gold_tasks']} gold), rankings: "
        f"{quality['rankings']}, tasks ranked by 2+ labellers: "
        f"{quality['tasks_ranked_by_two_or_more']}",
        f"pair agreement between labellers: {pct(quality['pair_agreement'])}",
        "Krippendorff's alpha (ordinal, over rankings): "
        + ("-" if alpha is None else f"{alpha:.3f}"),
        "",
        f"{'labeller':<16}{'done/assigned':>14}{'skipped':>9}  {'with others':<22}"
        f"{'with gold':<22}flags",
    ]
    for p in quality["labellers"]:
        flags = ", ".join(f"{k} {v}" for k, v in sorted(p["flags"].items())) or "-"
        lines.append(
            f"{p['name']:<16}{str(p['done']) + '/' + str(p['assigned']):>14}{p['skipped']:>9}  "
            f"{pct(p['agreement_with_others']):<22}{pct(p['agreement_with_gold']):<22}{flags}"
        )
    return "\n".join(lines)
