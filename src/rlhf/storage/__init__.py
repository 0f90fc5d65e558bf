"""Where artifacts live: local folders (the default) and ``s3://`` URIs through boto3.

Two rules hold everywhere:

* A folder is *published* complete or not at all, with ``manifest.json`` (every file's size
  and sha256) written last: locally by writing under a temporary name and renaming; on S3 by
  uploading every object first and the manifest last. Readers refuse a folder without a
  manifest, and a downloaded file that does not match it.
* ``s3://`` inputs are downloaded into a local cache keyed by checksum and the stage reads the
  local copy, so stage code only ever handles local paths.

Modules: ``local`` (atomic writes), ``manifest`` (checksums), ``cache`` (the download cache),
``s3`` (boto3 transfers), ``errors``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rlhf.storage.cache import cache_dir
from rlhf.storage.cache import exclusive as cache_lock
from rlhf.storage.errors import IntegrityError, MissingManifestError, StorageError
from rlhf.storage.local import atomic_dir, atomic_write_bytes, atomic_write_text, temp_sibling
from rlhf.storage.manifest import (
    MANIFEST,
    file_listing,
    read_manifest,
    sha256_file,
    verify_folder,
    write_manifest,
)
from rlhf.storage.s3 import is_s3, split_s3

__all__ = [
    "MANIFEST",
    "IntegrityError",
    "MissingManifestError",
    "StorageError",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "cache_lock",
    "file_listing",
    "is_s3",
    "local_path",
    "publish",
    "read_manifest",
    "sha256_file",
    "split_s3",
    "verify_folder",
    "write_manifest",
]


def local_path(uri: str | os.PathLike) -> Path:
    """A local path holding ``uri``: the path itself, or a verified, cached download of an S3
    object or published folder."""
    if is_s3(uri):
        from rlhf.storage import s3

        return s3.download(str(uri))
    return Path(uri)


def publish(local: str | os.PathLike, destination: str) -> str:
    """Copy a local file or folder to ``destination`` (an ``s3://`` URI or a local path),
    complete or not at all, and return ``destination``. A folder keeps (or gets) a manifest."""
    if is_s3(destination):
        from rlhf.storage import s3

        return s3.upload(local, destination)
    local, dest = Path(local), Path(destination)
    if local.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(dest)
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)
        return destination
    with atomic_dir(dest) as tmp:
        shutil.copytree(local, tmp, dirs_exist_ok=True)
        if (tmp / MANIFEST).is_file():
            verify_folder(tmp)
        else:
            write_manifest(tmp, {"artifact": "folder", "source": local.name})
    return destination
