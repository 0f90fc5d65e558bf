"""``rlhf label``: the labelling app and its data. ``serve`` runs the app; ``user add|list``
manage labellers; ``import`` loads a labelling batch; ``stats`` prints the quality report;
``export`` writes the preference pairs ``rlhf prepare`` reads."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DB_HELP = (
    "the labelling database: a SQLAlchemy URL (sqlite:///labels.db, "
    "postgresql://user:password@host/db) or a SQLite file path (default: $RLHF_LABEL_DB, "
    "else sqlite:///labelling.db)"
)


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Any]:
    """A transaction on ``--db``; a database that cannot be reached is a StorageError."""
    from sqlalchemy.exc import OperationalError

    from rlhf.labelling.db import open_engine, transaction
    from rlhf.storage import StorageError

    try:
        engine = open_engine(args.db)
        with transaction(engine) as session:
            yield session
    except OperationalError as e:
        raise StorageError(f"database {args.db}: {e.orig}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from rlhf.labelling.app import serve

    with _session(args):  # fail here, before the server starts, if the database is unusable
        pass
    print(f"labelling app on http://{args.host}:{args.port}/ (report: /report), db {args.db}")
    serve(args.db, args.host, args.port)
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from rlhf.labelling.accounts import add_labeller
    from rlhf.labelling.assignments import fill_queues

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    with _session(args) as session:
        token = add_labeller(session, args.name, password, admin=args.admin)
        made = fill_queues(session)
    role = "admin" if args.admin else "labeller"
    print(f"{role} {args.name} added ({made} assignments made). Token (shown once, keep it):")
    print(token)
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from rlhf.labelling.accounts import labellers
    from rlhf.labelling.assignments import progress

    with _session(args) as session:
        for person in labellers(session):
            p = progress(session, person.id)
            role = "admin" if person.admin else "labeller"
            login = "token+password" if person.password_hash else "token"
            print(
                f"{person.name:<20}{role:<10}{login:<16}{p.done}/{p.assigned} done, "
                f"{p.skipped} skipped"
            )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from rlhf.labelling.assignments import fill_queues
    from rlhf.labelling.batch import read_tasks
    from rlhf.labelling.importing import import_tasks, read_gold

    gold = read_gold(args.gold) if args.gold else None
    name = args.name or args.batch.rstrip("/").rsplit("/", 1)[-1].removesuffix(".jsonl")
    with _session(args) as session:
        done = import_tasks(
            session, read_tasks(args.batch), name, args.labellers_per_task, gold, args.batch
        )
        made = fill_queues(session)
    print(
        f"batch {name}: {done.created} tasks imported ({done.gold} gold), {done.unchanged} "
        f"already there; {made} assignments made"
    )
    if made == 0 and done.created:
        print("no labeller yet: tasks are assigned when labellers are added (rlhf label user add)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from rlhf.labelling.quality import format_report, read_labels, report

    with _session(args) as session:
        quality = report(read_labels(session))
    print(json.dumps(quality, indent=2) if args.json else format_report(quality))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rlhf.labelling.labels_export import export_labels
    from rlhf.labelling.quality import read_labels

    with _session(args) as session:
        labels = read_labels(session)
    done = export_labels(labels, args.out, args.min_agreement)
    for name, reason in sorted(done.excluded.items()):
        print(f"excluded {name}: {reason}")
    print(f"{done.pairs} pairs from {done.rankings} rankings -> {done.destination}")
    return 0


def _command(
    sub: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--db", default=os.environ.get("RLHF_LABEL_DB", "sqlite:///labelling.db"),
                   help=DB_HELP)  # fmt: skip
    p.set_defaults(fn=fn)
    return p


def add_label_commands(sub: Any) -> Any:
    """The ``rlhf label`` group; returns its subparsers so other label commands can join."""
    group = sub.add_parser(
        "label", help="human feedback: the labelling app, labellers, import, quality, export"
    )
    label = group.add_subparsers(dest="label_command", required=True)

    p = _command(label, "serve", cmd_serve, "run the labelling app (web pages and JSON API)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)

    user = label.add_parser("user", help="labeller accounts").add_subparsers(
        dest="user_command", required=True
    )
    p = _command(user, "add", cmd_user_add, "add a labeller; prints their token once")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="may see the quality report")
    p.add_argument("--password-stdin", action="store_true",
                   help="also set a password, read from the first line of stdin")  # fmt: skip
    _command(user, "list", cmd_user_list, "list labellers and their progress")

    p = _command(label, "import", cmd_import, "import a labelling batch and assign its tasks")
    p.add_argument("batch", help="batch folder or JSONL of tasks (local or s3://)")
    p.add_argument("--name", help="the batch's name in the database (default: its folder name)")
    p.add_argument("--labellers-per-task", type=int, default=2,
                   help="how many labellers rank each task (default 2)")  # fmt: skip
    p.add_argument("--gold", help="JSONL of gold tasks: {task_id, ranking: [ids best first]}")

    p = _command(label, "stats", cmd_stats, "print the quality report: agreement, progress")
    p.add_argument("--json", action="store_true", help="the report as JSON")

    p = _command(label, "export", cmd_export, "write the rankings as preference pairs")
    p.add_argument("--out", required=True, help="export folder (local or s3://)")
    p.add_argument("--min-agreement", type=float,
                   help="leave out labellers whose agreement with the others or with gold "
                   "is below this (0-1)")  # fmt: skip
    return label
