"""Rows kept on disk while prepare streams its inputs, and put in their final order there.

Prepare reads each row once, checks it and appends its canonical JSON (one line) to a scratch
file; in memory it keeps 41 bytes per row: the row's digest (dedupe), its prompt's digest (the
split), its token count and what the budget did. Once every input is read, dedupe and the split
are computed on those arrays, and the rows are put in their final order on disk: one pass over
the scratch file scatters each row into the bucket of the output shard it belongs to, and each
bucket, a bounded number of bytes, is then sorted in memory on its own. Nothing holds all rows.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhf.data.rows import first_occurrences, group_numbers

FITS, TRUNCATED, DROPPED = 0, 1, 2  # what the token budget did to a row
SHARD_BYTES = 64 * 2**20  # about this many bytes of canonical JSON per output shard
_READ_BYTES = 16 * 2**20  # how much of the scratch file one step of the scatter reads
_CUT_ROWS = 4096  # line offsets turned into Python ints at a time
_NEWLINE = ord("\n")


@dataclass
class Shard:
    """One output shard's rows, scattered to ``path`` in scratch order; ``positions[i]`` is
    where the file's ``i``-th line goes in the shard."""

    path: Path
    positions: np.ndarray

    def lines(self) -> Iterator[bytes]:
        """The shard's canonical JSON lines (without line breaks) in final order, cut one at a
        time from the bucket's bytes: the bucket is in memory once, not also as a list."""
        if not len(self.positions):
            return
        data = self.path.read_bytes()
        ends = _newlines(data)
        starts = np.empty_like(ends)
        starts[0], starts[1:] = 0, ends[:-1] + 1
        order = np.argsort(self.positions)
        for chunk in range(0, len(order), _CUT_ROWS):
            picked = order[chunk : chunk + _CUT_ROWS]
            for start, end in zip(starts[picked].tolist(), ends[picked].tolist(), strict=True):
                yield data[start:end]


def _newlines(data: bytes) -> np.ndarray:
    """Offsets of every line break in ``data``, found a block at a time (a mask of the whole
    bucket would be one more byte per byte)."""
    view = np.frombuffer(data, dtype=np.uint8)
    found = [
        start + np.flatnonzero(view[start : start + _READ_BYTES] == _NEWLINE)
        for start in range(0, len(view), _READ_BYTES)
    ]
    return np.concatenate(found) if found else np.zeros(0, np.int64)


class RowSpill:
    """The rows of one artifact, in the order read: canonical JSON lines in a scratch file for
    the rows the budget kept, and per row (dropped ones too) the small records dedupe, the
    budget counts and the split need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb", buffering=2**20)  # noqa: SIM115 (closed by close())
        self.digests = bytearray()  # 16 bytes per row: the row as normalised, before the budget
        self.prompts = bytearray()  # 16 bytes per row: the prompt it answers
        self.tokens = array("q")  # per row: prompt plus longest answer, as the budget counted
        self.outcomes = bytearray()  # per row: FITS, TRUNCATED or DROPPED
        self.spilled = 0  # lines written (rows not dropped)
        self.spilled_bytes = 0

    def __len__(self) -> int:
        return len(self.outcomes)

    def add(self, digest: bytes, prompt: bytes, tokens: int, outcome: int, line: str) -> None:
        """One row; ``line`` (its canonical JSON after the budget) is written unless dropped."""
        self.digests += digest
        self.prompts += prompt
        self.tokens.append(tokens)
        self.outcomes.append(outcome)
        if outcome != DROPPED:
            data = line.encode("utf-8") + b"\n"
            self._file.write(data)
            self.spilled += 1
            self.spilled_bytes += len(data)

    def close(self) -> None:
        self._file.close()

    def select(self, dedupe: bool) -> Selection:
        """The rows that stay: first occurrences (with ``dedupe``) the budget did not drop."""
        outcomes = np.frombuffer(self.outcomes, dtype=np.uint8)
        first = first_occurrences(self.digests) if dedupe else np.ones(len(self), dtype=bool)
        return Selection(
            rows=np.flatnonzero(first & (outcomes != DROPPED)),
            duplicates=int(len(self) - first.sum()),
            dropped=int((first & (outcomes == DROPPED)).sum()),
            truncated=int((first & (outcomes == TRUNCATED)).sum()),
        )

    def prompt_groups(self, rows: np.ndarray) -> np.ndarray:
        """Group numbers of ``rows``' prompts, in order of first appearance among them."""
        # The rows' digests as one (n, 16) array, handed over without a second copy as bytes.
        return group_numbers(np.frombuffer(self.prompts, dtype=np.uint8).reshape(-1, 16)[rows])

    def row_tokens(self, rows: np.ndarray) -> np.ndarray:
        return np.frombuffer(self.tokens, dtype=np.int64)[rows]

    def scatter(self, splits: dict[str, np.ndarray], folder: Path) -> dict[str, list[Shard]]:
        """Put the rows in final order: ``splits`` maps each split to its rows (row numbers, in
        final order). Returns each split's shards (one empty shard for an empty split)."""
        kept = np.frombuffer(self.outcomes, dtype=np.uint8) != DROPPED
        line_of_row = np.cumsum(kept) - 1  # a kept row's line in the scratch file
        rows_per_shard = max(1, SHARD_BYTES * self.spilled // max(1, self.spilled_bytes))
        # 4 bytes a row each: a shard number and a place in a shard are far below 2**31.
        bucket = np.full(self.spilled, -1, dtype=np.int32)
        position = np.zeros(self.spilled, dtype=np.int32)
        shards: dict[str, list[Shard]] = {}
        for split, rows in splits.items():
            count = max(1, math.ceil(len(rows) / rows_per_shard))
            first = sum(len(s) for s in shards.values())
            lines = line_of_row[rows]
            bucket[lines] = first + np.arange(len(rows)) // rows_per_shard
            position[lines] = np.arange(len(rows)) % rows_per_shard
            shards[split] = [
                Shard(folder / f"{self.path.stem}.{split}-{i:05d}", np.zeros(0))
                for i in range(count)
            ]
        every = [shard for split_shards in shards.values() for shard in split_shards]
        for shard in every:
            shard.path.write_bytes(b"")
        # Rows of each bucket in scratch order, then their places in the shard.
        by_bucket = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[by_bucket], np.arange(len(every) + 1))
        for i, shard in enumerate(every):
            shard.positions = position[by_bucket[bounds[i] : bounds[i + 1]]]
        self._scatter_lines(bucket, every)
        return shards

    def _scatter_lines(self, bucket: np.ndarray, shards: list[Shard]) -> None:
        start = 0
        for lines in self._line_blocks():
            targets = bucket[start : start + len(lines)]
            start += len(lines)
            order = np.argsort(targets, kind="stable")
            ordered = targets[order]
            for target in np.unique(ordered[ordered >= 0]).tolist():
                lo, hi = np.searchsorted(ordered, [target, target + 1])
                with open(shards[target].path, "ab") as f:
                    f.write(b"".join(lines[i] for i in order[lo:hi].tolist()))

    def _line_blocks(self) -> Iterator[list[bytes]]:
        with open(self.path, "rb") as f:
            while lines := f.readlines(_READ_BYTES):
                yield lines


@dataclass
class Selection:
    """What dedupe and the budget leave of a spill's rows, and what they took."""

    rows: np.ndarray  # the rows that stay, in the order read
    duplicates: int
    dropped: int  # over the budget (counted once a duplicate is gone, as dedupe runs first)
    truncated: int
