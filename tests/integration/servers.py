"""The servers the integration tests run against, and what the tests share: the fake
credentials, the bucket the MLflow server stores artifacts in, an S3 client."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

FAKE_ACCESS_KEY = "AKIARLHFFAKEKEY7TEST"
FAKE_SECRET_KEY = "rlhf-fake-secret/NeverLogThis+0123456789abc"
FAKE_CREDENTIALS = (FAKE_ACCESS_KEY, FAKE_SECRET_KEY)
REGION = "us-east-1"
ARTIFACT_BUCKET = "mlflow-artifacts"
STARTUP_TIMEOUT = 120.0  # seconds; mlflow server takes ~5-15 s on two busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs the server as its child and kills the whole process group once the test process that
# started it is gone: a pytest killed with SIGKILL gets no teardown, and its servers would
# otherwise live on, holding their ports.
_GUARD = """
import os, signal, subprocess, sys, time
tester = int(sys.argv[1])
# A signal to the guard alone (e.g. to the tester's children) takes the server with it.
signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
server = subprocess.Popen(sys.argv[2:])
while server.poll() is None:
    if os.getppid() != tester:
        os.killpg(0, signal.SIGKILL)
    time.sleep(0.5)
sys.exit(server.returncode)
"""


class Server:
    """A server subprocess with its log file; ``stop`` terminates it and frees its port."""

    def __init__(
        self, name: str, argv: list[str], port: int, log: Path, env: dict, cwd: Path | None = None
    ) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        guarded = [sys.executable, "-c", _GUARD, str(os.getpid()), *argv]
        with open(log, "wb") as out:
            # A session of its own: stop() signals the whole group (mlflow server runs uvicorn
            # as a child process, which would outlive its parent otherwise).
            self.proc = subprocess.Popen(
                guarded,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=cwd,
            )

    def wait_ready(self, path: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with status {self.proc.returncode} while starting")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        self.fail(f"not answering {self.url}{path} after {timeout:.0f} s")

    def fail(self, why: str) -> None:
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} {why}; its log ({self.log}) ends:\n{tail}")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # children that outlived the parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the port is free again once nothing listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: port {self.port} still in use after stopping")


def s3():
    import boto3

    return boto3.client("s3")


def serve_and_post(
    model_uri: str, body: dict, tracking_uri: str | None, log: Path, cwd: Path | None = None
) -> object:
    """``mlflow models serve`` for ``model_uri`` on a free 127.0.0.1 port (in ``cwd``, with
    ``MLFLOW_TRACKING_URI`` set to ``tracking_uri``, or unset for None), one real POST to
    /invocations, then the server stopped by its own process group (also on failure)."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs uvicorn from its PATH
    mlflow_cli = shutil.which("mlflow", path=bin_dir) or "mlflow"
    argv = [
        mlflow_cli, "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    server = Server("mlflow models serve", argv, port, log, env, cwd)
    try:
        server.wait_ready("/ping", timeout=240)
        request = urllib.request.Request(
            f"{server.url}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    finally:
        server.stop()
