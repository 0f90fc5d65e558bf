"""Real servers for the integration tests, started once per session on free 127.0.0.1 ports
and stopped at the end: moto's S3 server (boto3 talks to it over HTTP) and an MLflow tracking
server (sqlite backend, artifacts proxied by the server to a bucket on that S3 server).

The AWS credentials are fake but recognisable, so tests can scan what the pipeline writes for
them (test_pipeline_s3_mlflow.py)."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from servers import ARTIFACT_BUCKET, FAKE_ACCESS_KEY, FAKE_SECRET_KEY, REGION, Server, free_port, s3


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory):
    """Fake credentials and a region in the environment; no profile or config file of the
    machine's user can leak in."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    empty.write_text("")
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.setenv("AWS_CONFIG_FILE", str(empty))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_MAX_ATTEMPTS"):
        mp.delenv(name, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def s3_server(aws_env, tmp_path_factory):
    """moto's S3 server; ``AWS_ENDPOINT_URL`` points at it for the whole session."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = Server("moto S3 server", argv, port, log, dict(os.environ))
    try:
        server.wait_ready("/moto-api/")
        mp = pytest.MonkeyPatch()
        mp.setenv("AWS_ENDPOINT_URL", server.url)
        s3().create_bucket(Bucket=ARTIFACT_BUCKET)
        yield server
        mp.undo()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """``mlflow server`` with a sqlite store and artifacts proxied to s3://mlflow-artifacts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    argv = [
        mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/artifacts",
    ]  # fmt: skip
    server = Server("mlflow server", argv, port, root / "server.log", dict(os.environ))
    try:
        server.wait_ready("/health")
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracking_server(mlflow_server, monkeypatch):
    """This test tracks to the MLflow server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow_server.url


@pytest.fixture
def bucket(s3_server):
    """A fresh, empty bucket for one test."""
    name = f"rlhf-{uuid.uuid4().hex[:12]}"
    s3().create_bucket(Bucket=name)
    return name


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty download cache for one test."""
    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def faulty_s3(s3_server, monkeypatch):
    """A proxy in front of the S3 server that tests can make go away; boto3 talks to it."""
    from s3_faults import FaultyProxy

    proxy = FaultyProxy(s3_server.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.close()
