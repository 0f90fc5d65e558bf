"""``s3://`` URIs through boto3: AWS S3 and S3-compatible servers (MinIO, moto).

The endpoint and credentials come from boto3's standard sources only: ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` (MinIO), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws/config``, instance roles. Nothing here reads, logs or returns them,
and every error is re-raised as ``StorageError`` with credentials redacted.

Transfers are boto3's managed ones (multipart above a threshold, parts in parallel threads);
each request is retried with exponential backoff and jitter (botocore's "standard" retry
mode, 5 attempts) unless ``AWS_RETRY_MODE``/``AWS_MAX_ATTEMPTS`` say otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rlhf.redaction import redact
from rlhf.storage import cache
from rlhf.storage.errors import MissingManifestError, StorageError
from rlhf.storage.manifest import (
    MANIFEST,
    build_manifest,
    dumps,
    parse,
    sha256_bytes,
    sha256_file,
    verify_folder,
)

SCHEME = "s3://"
T = TypeVar("T")
MiB = 1 << 20
RETRY_MODE = "standard"
MAX_ATTEMPTS = 5
SHA256_METADATA = "sha256"  # x-amz-meta-sha256 on every object we upload


@dataclass(frozen=True)
class TransferSettings:
    """boto3 managed-transfer settings (``boto3.s3.transfer.TransferConfig``)."""

    multipart_threshold: int = 64 * MiB  # files at least this large go up/down in parts
    multipart_chunksize: int = 16 * MiB  # part size (S3's minimum is 5 MiB)
    max_concurrency: int = 8  # parts in flight at once

    def boto(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            use_threads=True,
        )


DEFAULT_TRANSFER = TransferSettings()


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith(SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"not an s3 URI with a bucket: {uri!r}")
    return bucket, key.strip("/")


def client() -> Any:
    """An S3 client from the standard AWS environment, with retries and timeouts."""
    import boto3
    from botocore.config import Config

    # botocore reads AWS_RETRY_MODE/AWS_MAX_ATTEMPTS itself; an explicit setting would win.
    user_set = os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS")
    retries = None if user_set else {"mode": RETRY_MODE, "max_attempts": MAX_ATTEMPTS}
    config = Config(retries=retries, connect_timeout=10, read_timeout=120)
    return boto3.session.Session().client("s3", config=config)


@contextlib.contextmanager
def errors(action: str, uri: str) -> Iterator[None]:
    """Re-raise boto errors as ``StorageError("<action> <uri>: ...")``, credentials redacted."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as e:
        raise StorageError(redact(f"{action} {uri}: {e}")) from None


def _not_found(e: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(e, ClientError):
        return False
    code = str(e.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


# --- reading -----------------------------------------------------------------------------


def _unless_missing(uri: str, request: Callable[[], T]) -> T | None:
    """``request()``'s answer, or None when S3 says there is no such object."""
    from botocore.exceptions import ClientError

    with errors("read", uri):
        try:
            return request()
        except ClientError as e:
            if not _not_found(e):
                raise
            return None


def _head(s3: Any, bucket: str, key: str, uri: str) -> dict[str, Any] | None:
    """The object's HEAD (size, ETag, our sha256 metadata), or None when there is none."""
    return _unless_missing(uri, lambda: s3.head_object(Bucket=bucket, Key=key))


def _manifest_bytes(s3: Any, bucket: str, key: str, uri: str) -> bytes | None:
    """The ``manifest.json`` published under ``key``, or None when there is none."""
    return _unless_missing(
        uri, lambda: s3.get_object(Bucket=bucket, Key=_join(key, MANIFEST))["Body"].read()
    )


def download(uri: str, transfer: TransferSettings = DEFAULT_TRANSFER) -> Path:
    """A verified local copy of an S3 folder (with ``manifest.json``) or single object.

    A prefix holding objects but no manifest is refused (``MissingManifestError``): its
    publish did not finish, or it was uploaded by other means (use ``rlhf publish``)."""

    bucket, key = split_s3(uri)
    s3 = client()
    config = transfer.boto()
    manifest_bytes = _manifest_bytes(s3, bucket, key, uri)
    if manifest_bytes is not None:
        where = f"{SCHEME}{bucket}/{_join(key, MANIFEST)}"
        manifest = parse(manifest_bytes, where)

        def fetch(rel: str, dest: Path) -> None:
            with errors("download", f"{SCHEME}{bucket}/{_join(key, rel)}"):
                s3.download_file(bucket, _join(key, rel), str(dest), Config=config)

        return cache.cached_folder(manifest_bytes, manifest, fetch, f"{SCHEME}{bucket}/{key}")

    head = _head(s3, bucket, key, uri) if key else None
    if head is None:
        with errors("list", uri):
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=_join(key, ""), MaxKeys=1)
        if listed.get("KeyCount", 0):
            raise MissingManifestError(
                f"{uri}: a folder with no {MANIFEST}: its publish did not finish, or it was "
                "uploaded by other means; publish folders with `rlhf publish` (objects first, "
                "manifest last)"
            )
        raise StorageError(f"{uri}: no such object or folder")

    sha = (head.get("Metadata") or {}).get(SHA256_METADATA)
    etag = str(head.get("ETag", "")).strip('"')
    cache_id = sha or sha256_bytes(f"{bucket}/{key}@{etag}:{head.get('ContentLength')}".encode())

    def fetch_file(dest: Path) -> None:
        with errors("download", uri):
            s3.download_file(bucket, key, str(dest), Config=config)

    return cache.cached_file(cache_id, Path(key).name, fetch_file, sha, uri)


# --- writing -----------------------------------------------------------------------------


def upload(
    local: str | os.PathLike, uri: str, transfer: TransferSettings = DEFAULT_TRANSFER
) -> str:
    """Publish a local file or folder to ``uri`` and return ``uri``.

    A folder is published as objects first and ``manifest.json`` last, after any manifest
    already at ``uri`` has been deleted: a reader sees the complete new folder or none. Its own
    manifest is used (after checking the files against it); a folder without one gets a fresh
    manifest. Files the manifest already at ``uri`` lists with the same path, size and sha256
    are not uploaded again, and a folder with the same manifest not at all. A file becomes one
    object carrying its sha256 in its metadata (not uploaded when one with that sha256 is
    there)."""
    local = Path(local)
    bucket, key = split_s3(uri)
    s3 = client()
    config = transfer.boto()
    if local.is_file():
        sha = sha256_file(local)
        head = _head(s3, bucket, key, uri)
        if head is not None and (head.get("Metadata") or {}).get(SHA256_METADATA) == sha:
            return uri  # already there (a retried task's inputs, a second publish)
        with errors("upload", uri):
            s3.upload_file(
                str(local),
                bucket,
                key,
                ExtraArgs={"Metadata": {SHA256_METADATA: sha}},
                Config=config,
            )
        return uri
    if not local.is_dir():
        raise StorageError(f"{local}: no such file or folder to publish")
    if (local / MANIFEST).is_file():
        manifest = verify_folder(local)
        manifest_bytes = (local / MANIFEST).read_bytes()
    else:
        manifest = build_manifest(local, {"artifact": "folder", "source": local.name})
        manifest_bytes = dumps(manifest).encode("utf-8")
    manifest_key = _join(key, MANIFEST)
    # What the manifest already there lists is there, checked by the publish that wrote it
    # (objects first, manifest last): a retried task or a second publish of the same folder
    # uploads only what changed, and nothing at all when nothing did.
    old = _manifest_bytes(s3, bucket, key, uri)
    if old == manifest_bytes:
        return uri
    there: set[tuple[str, str, int]] = set()
    if old is not None:
        with contextlib.suppress(StorageError):  # unreadable: upload everything
            files = parse(old, f"{SCHEME}{bucket}/{manifest_key}")["files"]
            there = {(f["path"], f["sha256"], f["bytes"]) for f in files}
    with errors("publish", uri):
        s3.delete_object(Bucket=bucket, Key=manifest_key)
    for entry in manifest["files"]:
        if (entry["path"], entry["sha256"], entry["bytes"]) in there:
            continue
        obj = _join(key, entry["path"])
        with errors("upload", f"{SCHEME}{bucket}/{obj}"):
            s3.upload_file(
                str(local / entry["path"]),
                bucket,
                obj,
                ExtraArgs={"Metadata": {SHA256_METADATA: entry["sha256"]}},
                Config=config,
            )
    with errors("upload", f"{SCHEME}{bucket}/{manifest_key}"):
        s3.put_object(
            Bucket=bucket, Key=manifest_key, Body=manifest_bytes, ContentType="application/json"
        )
    return uri
