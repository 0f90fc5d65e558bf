"""Seeded train/validation splits that keep rows of one prompt together.

The split works on arrays of row numbers, never on the rows: memory is a few bytes per row. It
draws from ``random.Random(seed)`` exactly as a shuffle of Python lists of the same lengths
would, so a seed gives the same split whatever holds the rows."""

from __future__ import annotations

import random
from array import array

import numpy as np

_CHUNK = 1 << 16


def split_indices(keys: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """:func:`split_groups` for rows given by their keys (the prompt), as lists."""
    first: dict[str, int] = {}
    groups = np.fromiter((first.setdefault(k, len(first)) for k in keys), np.int64, len(keys))
    train, validation = split_groups(groups, fraction, seed)
    return train.tolist(), validation.tolist()


def split_groups(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of rows ``0..len(groups)-1``; ``groups[i]`` numbers row
    ``i``'s prompt, groups numbered ``0, 1, ...`` in order of their first row.

    Rows of one group land on the same side, so validation measures prompts never trained on
    (a ranking's pairs all share one prompt). Validation gets about ``fraction`` of the rows,
    never more than ``round(n * fraction)`` except that it gets at least one row when there are
    two rows or more and ``fraction > 0``, and train keeps at least one. With a single prompt
    the rows themselves are split. Returns the row numbers of each side, in shuffled order."""
    n = len(groups)
    rng = random.Random(seed)
    if n < 2 or fraction <= 0:
        return _shuffled(np.arange(n, dtype=np.int64), rng), np.zeros(0, np.int64)
    target = min(n - 1, max(1, round(n * fraction)))
    if n and int(groups.max()) == 0:  # one prompt: every row is its own group
        groups = np.arange(n, dtype=np.int64)
    sizes = np.bincount(groups)
    order = _shuffled(np.arange(len(sizes), dtype=np.int64), rng)  # the groups, shuffled
    # Greedy: take each group (in shuffled order) that still fits under the target.
    held = np.zeros(len(sizes), dtype=bool)
    room = target
    for start in range(0, len(order), _CHUNK):  # in chunks: no list of every group at once
        chunk = order[start : start + _CHUNK]
        for group, size in zip(chunk.tolist(), sizes[chunk].tolist(), strict=True):
            if size <= room:
                held[group] = True
                room -= size
        if room == 0:
            break
    if room == target:  # every group is bigger than the target: take the smallest
        held[order[int(np.argmin(sizes[order]))]] = True
    # Rows listed group by group in shuffled order (a group's rows in row order), then each side
    # shuffled, as the list version did.
    position = np.empty(len(sizes), dtype=np.int64)
    position[order] = np.arange(len(sizes))
    rows = np.argsort(position[groups], kind="stable")
    in_validation = held[groups[rows]]
    # Validation's rows come in the order its groups were taken: the same shuffled order.
    train = _shuffled(rows[~in_validation], rng)
    validation = _shuffled(rows[in_validation], rng)
    return train, validation


def _shuffled(values: np.ndarray, rng: random.Random) -> np.ndarray:
    """``values`` permuted by ``rng.shuffle`` of a list of the same length (the same draws),
    through an 8-byte-per-item array instead of a list of Python ints."""
    permutation = array("q", range(len(values)))
    rng.shuffle(permutation)  # type: ignore[arg-type]  # any mutable sequence works
    return values[np.frombuffer(permutation, dtype=np.int64)] if len(values) else values
