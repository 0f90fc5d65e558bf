"""``manifest.json``: what a published folder holds, written last.

Besides the writer's own fields (what the artifact is, its sources, counts, metrics), a
manifest lists every other file of the folder with its size and sha256::

    {"artifact": "sft_model", ..., "rlhf_version": "0.1.0",
     "files": [{"path": "config.json", "bytes": 712, "sha256": "9f2c..."}, ...]}

A folder without one is incomplete or not ours; a file that does not match it is corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from rlhf.storage.errors import IntegrityError, MissingManifestError
from rlhf.storage.local import atomic_write_text

MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            out.append({"path": rel, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return out


def build_manifest(folder: str | os.PathLike, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` plus the package version and the listing of ``folder``."""
    from rlhf import __version__

    return {**fields, "rlhf_version": __version__, "files": file_listing(folder)}


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True)


def write_manifest(folder: str | os.PathLike, fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/manifest.json`` last: ``fields`` plus the list of files with checksums."""
    manifest = build_manifest(folder, fields)
    atomic_write_text(Path(folder) / MANIFEST, dumps(manifest))
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise MissingManifestError(f"{folder}: no {MANIFEST}; the folder is incomplete or not ours")
    return parse(path.read_bytes(), str(path))


def parse(data: bytes, where: str) -> dict[str, Any]:
    """A manifest's JSON, checked: a ``files`` list of safe relative paths with sizes and
    sha256 digests. ``where`` names it in errors."""
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise IntegrityError(f"{where}: not valid JSON ({e})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise IntegrityError(f"{where}: no 'files' list; not a manifest written by rlhf")
    for i, entry in enumerate(files):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("bytes"), int)
            and isinstance(entry.get("sha256"), str)
        )
        if not ok:
            raise IntegrityError(f"{where}: files[{i}] needs path, bytes and sha256")
        check_relative(entry["path"], f"{where}: files[{i}]")
    return manifest


def check_relative(path: str, where: str) -> None:
    """Refuse paths that would leave the folder (absolute, ``..``) or name the manifest."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or path == MANIFEST:
        raise IntegrityError(f"{where}: unsafe path {path!r}")


def verify_file(path: Path, entry: dict[str, Any], where: str) -> None:
    """Raise ``IntegrityError`` naming ``where`` unless ``path`` has the entry's size and sha256."""
    if not path.is_file():
        raise IntegrityError(f"{where}: missing (listed in the manifest)")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise IntegrityError(f"{where}: {size} bytes, the manifest says {entry['bytes']}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise IntegrityError(
            f"{where}: checksum mismatch (sha256 {digest[:12]}..., the manifest says "
            f"{entry['sha256'][:12]}...); the object is corrupt or was changed after publishing"
        )


def verify_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file the folder's manifest lists; return the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for entry in manifest["files"]:
        verify_file(folder / entry["path"], entry, f"{folder}/{entry['path']}")
    return manifest
