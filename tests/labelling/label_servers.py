"""The real servers the labelling tests run against: a PostgreSQL server (Debian's package)
and the labelling app under uvicorn, each a subprocess stopped by its pid."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from integration.servers import Server, free_port

SRC = Path(__file__).resolve().parents[2] / "src"


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} not found under /usr/lib/postgresql/*/bin: install Debian's "
            "postgresql package (make install-dev does)"
        )
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1 with trust authentication.

    PostgreSQL refuses to run as root, so under root (CI containers, this project's dev
    machines) the server runs as the ``postgres`` system user that Debian's package creates,
    through ``runuser``; its data folder lives directly under /tmp, since pytest's own temporary
    folders are private to root. It is stopped with SIGQUIT (an immediate shutdown: its data is
    thrown away) by its pid."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
        self.port = free_port()
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        data, sockets = self.root / "data", self.root / "sockets"
        subprocess.run(
            [*as_user, _postgres_bin("initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run([*as_user, "mkdir", str(sockets)], check=True)
        self.server = Server(
            "postgres",
            [*as_user, _postgres_bin("postgres"), "-D", str(data), "-k", str(sockets),
             "-p", str(self.port), "-h", "127.0.0.1", "-c", "max_connections=200"],
            self.port, self.root / "postgres.log", dict(os.environ),
        )  # fmt: skip
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 60
        while True:
            try:
                self._sql("SELECT 1")
                break
            except Exception:
                if self.server.proc.poll() is not None or time.monotonic() > deadline:
                    self.server.fail("did not start")
                time.sleep(0.2)
        self._databases = 0

    def _sql(self, statement: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def new_database(self) -> str:
        """The URL of a new, empty database on this server."""
        self._databases += 1
        name = f"labels_{self._databases}"
        self._sql(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.proc.pid, signal.SIGQUIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.proc.wait(timeout=20)
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_app(db: str, log: Path) -> Server:
    """``rlhf label serve`` on a free port, answering."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server = Server(
        "rlhf label serve",
        [sys.executable, "-m", "rlhf", "label", "serve", "--db", db, "--host", "127.0.0.1",
         "--port", str(port)],
        port, log, env,
    )  # fmt: skip
    server.wait_ready("/static/app.js")
    return server


def call(
    url: str, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """(status, JSON body) of one request to the app."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
