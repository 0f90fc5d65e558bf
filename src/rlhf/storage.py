"""Where artifacts live: local folders (the default) and ``s3://`` URIs through boto3.

Two rules hold everywhere:

* A folder is *published* atomically: it is written under a temporary sibling name and renamed
  into place only when complete, with ``manifest.json`` written last. A reader that sees the
  folder sees all of it.
* ``s3://`` inputs are downloaded into a local cache and the stage reads the local copy, so stage
  code only ever handles local paths.

Endpoint and credentials come from boto3's standard sources (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``~/.aws/config`` ...); nothing here reads or prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"not an s3 URI with a bucket: {uri!r}")
    return bucket, key


def cache_dir() -> Path:
    """Local cache for downloaded objects (``RLHF_CACHE_DIR`` or ``~/.cache/rlhf``)."""
    return Path(os.environ.get("RLHF_CACHE_DIR", Path.home() / ".cache" / "rlhf"))


def _s3_client():
    import boto3  # imported lazily: local runs never need it

    return boto3.client("s3")


def local_path(uri: str | os.PathLike) -> Path:
    """Return a local path holding ``uri``: the path itself, or a cached download of an S3
    object or prefix. The download lands under a temporary name and is renamed when complete."""
    uri = str(uri)
    if not is_s3(uri):
        return Path(uri)
    bucket, key = split_s3(uri)
    target = cache_dir() / "s3" / bucket / key.rstrip("/")
    if target.exists():
        return target
    client = _s3_client()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        prefix = key.rstrip("/") + "/"
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = [o["Key"] for page in pages for o in page.get("Contents", [])]
        if objects:  # a folder: every object under the prefix
            for obj_key in objects:
                dest = tmp / obj_key[len(prefix) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj_key, str(dest))
        else:
            client.download_file(bucket, key, str(tmp))
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return target


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success replace ``final`` with it.

    On an exception the temporary folder is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a published folder is read by other stages
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        # KFP creates output folders before the task runs; replace, never merge.
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_listing(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every file under ``folder`` (except the manifest) with its size and sha256, sorted."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            out.append({"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return out


def write_manifest(folder: str | os.PathLike, fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/manifest.json`` last: ``fields`` plus the list of files with checksums."""
    from rlhf import __version__

    manifest = {**fields, "rlhf_version": __version__, "files": file_listing(folder)}
    atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}; the folder is incomplete or not ours")
    return json.loads(path.read_text(encoding="utf-8"))
