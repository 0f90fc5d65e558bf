"""Fixtures of the labelling tests: a real PostgreSQL server for the session, and a fresh
database per test on SQLite (a file) and on that server."""

from __future__ import annotations

import pytest
from label_servers import Postgres


@pytest.fixture(scope="session")
def postgres():
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    return request.getfixturevalue("postgres").new_database()
