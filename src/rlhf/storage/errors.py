"""What can go wrong with stored artifacts, as exceptions whose messages name the object."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Reading or writing an artifact failed (the message names the URI, never a credential)."""


class MissingManifestError(StorageError, FileNotFoundError):
    """A folder has no ``manifest.json``: its write did not finish, or it was not published by
    rlhf (``rlhf publish`` uploads a folder with one)."""


class IntegrityError(StorageError):
    """A file does not match the size or sha256 its manifest records."""
