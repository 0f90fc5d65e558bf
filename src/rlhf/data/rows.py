"""Row identity: one canonical spelling of a row, what dedupe compares, what a split keeps
together (the prompt) and what the content checksum of an artifact hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

Row = dict[str, Any]


def canonical_json(value: Any) -> str:
    """One spelling per value: what dedupe compares and the content checksum hashes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def dedupe(rows: list[Row]) -> tuple[list[Row], int]:
    """``rows`` without exact repeats (first kept, order kept), and how many were dropped."""
    seen: set[bytes] = set()
    kept = []
    for row in rows:
        key = hashlib.sha256(canonical_json(row).encode("utf-8")).digest()
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def prompt_key(artifact: str, row: Row) -> str:
    """The prompt a row answers, canonically spelled: rows sharing it stay on one split side."""
    prompt = row["messages"][:-1] if artifact == "sft" else row["prompt"]
    return canonical_json(prompt)


def content_sha256(splits: dict[str, list[Row]]) -> str:
    """sha256 over one line per row, in split then row order: the canonical JSON (sorted keys,
    no spaces, UTF-8) of ``[split, row]`` followed by a newline."""
    h = hashlib.sha256()
    for split, rows in splits.items():
        for row in rows:
            h.update((canonical_json([split, row]) + "\n").encode("utf-8"))
    return h.hexdigest()
