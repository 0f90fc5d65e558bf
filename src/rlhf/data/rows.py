"""Row identity: one canonical spelling of a row, the digests dedupe and the split compare, what a
split keeps together (the prompt) and what the content checksum of an artifact hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

Row = dict[str, Any]


def canonical_json(value: Any) -> str:
    """One spelling per value: what dedupe compares and the content checksum hashes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest(text: str) -> bytes:
    """16 bytes standing for ``text`` (blake2b): what dedupe and the split compare instead of the
    rows, so they hold 16 bytes per row. A collision is about as likely as 2**-64 for 2**32
    rows."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def first_occurrences(digests: bytes | bytearray) -> np.ndarray:
    """For each 16-byte digest in ``digests``, whether it is the first with its value: dedupe
    keeps those (the first of exact repeats, order kept)."""
    runs, order = _runs(digests)
    keep = np.zeros(len(order), dtype=bool)
    keep[order[runs]] = True
    return keep


def group_numbers(digests: bytes | bytearray | np.ndarray) -> np.ndarray:
    """Number the distinct 16-byte digests ``0, 1, ...`` in order of first appearance and give
    each row its digest's number (rows sharing a prompt share a group)."""
    runs, order = _runs(digests)
    run_of_sorted = np.cumsum(runs) - 1
    firsts = order[runs]  # each distinct value's first row, in sorted-value order
    rank = np.empty(len(firsts), dtype=np.int64)
    rank[np.argsort(firsts, kind="stable")] = np.arange(len(firsts))
    groups = np.empty(len(order), dtype=np.int64)
    groups[order] = rank[run_of_sorted]
    return groups


def _runs(digests: bytes | bytearray | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows sorted by digest then row number, and where each run of equal digests starts.
    ``digests`` may also be a C-contiguous ``(n, 16)`` uint8 array (no copy into bytes)."""
    if isinstance(digests, np.ndarray):
        pairs = digests.view("<u8").reshape(-1, 2)
    else:
        pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    order = np.lexsort((np.arange(len(pairs)), pairs[:, 1], pairs[:, 0]))
    runs = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        ordered = pairs[order]
        runs[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    return runs, order


def prompt_key(artifact: str, row: Row) -> str:
    """The prompt a row answers, canonically spelled: rows sharing it stay on one split side."""
    prompt = row["messages"][:-1] if artifact == "sft" else row["prompt"]
    return canonical_json(prompt)


def pair_key(prompt: bytes, chosen: str, rejected: str) -> tuple[bytes, int]:
    """A preference row's answers as an unordered pair under its prompt (``prompt``: the
    prompt's digest, as the split takes it) in 16 bytes, and which way the row orders them (1
    when ``chosen`` spells before ``rejected``): two rows with the same key and different
    orders contradict each other."""
    answers = sorted((chosen, rejected))
    key = hashlib.blake2b(prompt + canonical_json(answers).encode("utf-8"), digest_size=16)
    return key.digest(), int(chosen == answers[0])


def contradicting(keys: bytes | bytearray, orders: bytes | bytearray, rows: np.ndarray) -> int:
    """How many of ``rows`` (row numbers into the per-row ``keys``, 16 bytes each, and
    ``orders``, 1 byte each, of :func:`pair_key`) share their pair with one of ``rows`` that
    orders it the other way."""
    if not len(rows):
        return 0
    groups = group_numbers(np.frombuffer(keys, dtype=np.uint8).reshape(-1, 16)[rows])
    first = np.frombuffer(orders, dtype=np.uint8)[rows].astype(bool)
    one_way = np.zeros(groups.max() + 1, dtype=bool)
    other_way = np.zeros_like(one_way)
    one_way[groups[first]] = True
    other_way[groups[~first]] = True
    return int((one_way & other_way)[groups].sum())


def content_sha256(splits: dict[str, list[Row]]) -> str:
    """sha256 over one line per row, in split then row order: the canonical JSON (sorted keys,
    no spaces, UTF-8) of ``[split, row]`` followed by a newline."""
    h = hashlib.sha256()
    for split, rows in splits.items():
        for row in rows:
            h.update((canonical_json([split, row]) + "\n").encode("utf-8"))
    return h.hexdigest()
