"""The local download cache, keyed by checksum.

Layout under ``RLHF_CACHE_DIR`` (default ``~/.cache/rlhf``)::

    blobs/ab/ab12...      one verified file per sha256 (read-only)
    folders/<sha256 of manifest.json>/   a downloaded folder: hard links to its blobs + manifest
    files/<id>/<name>     a downloaded single object (id: its sha256, or its ETag's hash)

A folder is keyed by its manifest's checksum, so a re-published prefix is a new entry and a
stale copy is never served; files shared by two folders are stored once. Every entry appears
by a rename when complete, so concurrent readers (several tasks on one machine) never see a
half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlhf.storage.errors import IntegrityError
from rlhf.storage.local import temp_sibling
from rlhf.storage.manifest import MANIFEST, sha256_bytes, sha256_file, verify_file

# fetch(relative_path, destination): download one listed file to a local path.
Fetch = Callable[[str, Path], None]


def cache_dir() -> Path:
    """Local cache for downloaded objects (``RLHF_CACHE_DIR`` or ``~/.cache/rlhf``)."""
    return Path(os.environ.get("RLHF_CACHE_DIR", Path.home() / ".cache" / "rlhf"))


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the cache's machine-wide lock: the processes of one node that all need the same
    download (the ranks of a launch) take turns, so the first downloads and the others find
    it cached, instead of each downloading its own copy."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def blob_path(sha256: str) -> Path:
    return cache_dir() / "blobs" / sha256[:2] / sha256


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or no hard links: copy
        shutil.copyfile(src, dest)


def fetch_blob(entry: dict[str, Any], fetch: Fetch, where: str) -> Path:
    """The verified local blob for a manifest entry, downloading it when not cached yet.
    A download that does not match the entry raises ``IntegrityError`` and is discarded."""
    blob = blob_path(entry["sha256"])
    if blob.is_file():
        return blob
    blob.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(blob)
    try:
        fetch(entry["path"], tmp)
        verify_file(tmp, entry, where)
        tmp.chmod(0o444)  # a blob is shared through hard links: nobody may edit it in place
        os.replace(tmp, blob)
    finally:
        tmp.unlink(missing_ok=True)
    return blob


def cached_folder(
    manifest_bytes: bytes, manifest: dict[str, Any], fetch: Fetch, where: str
) -> Path:
    """A local folder holding every file ``manifest`` lists (verified) and the manifest itself;
    ``where`` (the remote location) names files in errors."""
    target = cache_dir() / "folders" / sha256_bytes(manifest_bytes)
    if (target / MANIFEST).is_file():
        return target
    blobs = {e["path"]: fetch_blob(e, fetch, f"{where}/{e['path']}") for e in manifest["files"]}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        for rel, blob in blobs.items():
            _link_or_copy(blob, tmp / rel)
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():  # not a concurrent reader's complete copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def cached_file(
    cache_id: str, name: str, fetch: Callable[[Path], None], sha256: str | None, where: str
) -> Path:
    """A downloaded single object, ``files/<cache_id>/<name>`` (the name keeps its suffix,
    which readers use to pick the format); verified when its ``sha256`` is known."""
    target = cache_dir() / "files" / cache_id / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        fetch(tmp)
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256:
                raise IntegrityError(
                    f"{where}: checksum mismatch (sha256 {got[:12]}..., the object's metadata "
                    f"says {sha256[:12]}...); the object is corrupt or was changed"
                )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
