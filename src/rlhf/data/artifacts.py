"""Read the prepared artifacts (the ``datasets`` folders the prepare stage writes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

from rlhf import storage


def load_split(uri: str | os.PathLike, split: str) -> datasets.Dataset:
    """One split of a prepared artifact, local or ``s3://``; refuses folders with no manifest
    (an interrupted or foreign write)."""
    folder = storage.local_path(str(uri))
    storage.read_manifest(folder)
    data = datasets.load_from_disk(str(folder))
    if split not in data:
        raise ValueError(f"{uri}: no split {split!r} (has {sorted(data)})")
    return data[split]


def manifest_checksum(uri: str | os.PathLike) -> str:
    """The content checksum recorded by prepare, to tie a model to the exact data it saw."""
    manifest: dict[str, Any] = storage.read_manifest(Path(storage.local_path(str(uri))))
    return str(manifest.get("content_sha256", ""))
