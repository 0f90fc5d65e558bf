"""The labelling app's database: its tables (SQLAlchemy) and how to open one.

SQLite by default (a file; WAL, a busy timeout, every write transaction taken with ``BEGIN
IMMEDIATE`` and synced, so concurrent writers wait for each other instead of failing, and a
commit is on disk before it returns), PostgreSQL by URL (``postgresql://user@host/db``).

Tables: ``labellers`` (token and password hashes only), ``sessions`` (signed-in browsers),
``tasks`` (a batch's prompt and candidates, gold order if any), ``assignments`` (a task in a
labeller's queue, unique per (task, labeller)) and ``submissions`` (the one answer to an
assignment, a ranking or a skip: unique per assignment, so a submission never lands twice).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

DEFAULT_DB = "sqlite:///labelling.db"
BUSY_TIMEOUT_MS = 30_000


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Labeller(Base):
    __tablename__ = "labellers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of a random token
    password_hash: Mapped[str | None] = mapped_column(String(200))  # pbkdf2, salted
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class SignIn(Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    labeller_id: Mapped[int] = mapped_column(ForeignKey("labellers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("batch", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    candidates: Mapped[list[dict[str, str]]] = mapped_column(JSON)  # [{id, text, source}]
    gold: Mapped[list[str] | None] = mapped_column(JSON)  # candidate ids, best first
    labellers_wanted: Mapped[int] = mapped_column(Integer, default=2)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "labeller_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    labeller_id: Mapped[int] = mapped_column(ForeignKey("labellers.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # queue order, stable and shuffled
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    ranking: Mapped[list[str] | None] = mapped_column(JSON)  # candidate ids, best first
    scores: Mapped[dict[str, int] | None] = mapped_column(JSON)  # candidate id -> 1..7
    flags: Mapped[dict[str, list[str]] | None] = mapped_column(JSON)  # id -> ["unsafe", ...]
    reason: Mapped[str | None] = mapped_column(Text)  # a skip's reason
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


def database_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as it is, a bare path as a SQLite file."""
    return db if "://" in db else f"sqlite:///{Path(db).resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event below opens transactions
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # Take the write lock up front: a deferred transaction that reads and then writes can fail
    # at once with "database is locked" when another writer went first; IMMEDIATE waits.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def open_engine(db: str = DEFAULT_DB) -> Engine:
    """An engine on ``db`` (a URL or a SQLite file path) with the tables created if missing."""
    url = make_url(database_url(db))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
            url = url.set(drivername="postgresql+psycopg2")  # SQLAlchemy 2.1 defaults to psycopg 3
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    Base.metadata.create_all(engine)
    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on leaving the block (rolled back on an error)."""
    with sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        yield session
