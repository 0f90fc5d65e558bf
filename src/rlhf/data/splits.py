"""Seeded train/validation splits that keep rows of one prompt together."""

from __future__ import annotations

import random


def split_indices(keys: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/validation split of rows ``0..len(keys)-1``.

    Rows with the same key (the prompt) land on the same side, so validation measures prompts
    never trained on (a ranking's pairs all share one prompt). Validation gets about
    ``fraction`` of the rows, never more than ``round(n * fraction)`` except that it gets at
    least one row when there are two rows or more and ``fraction > 0``, and train keeps at least
    one. With a single prompt the rows themselves are split."""
    n = len(keys)
    rng = random.Random(seed)
    if n < 2 or fraction <= 0:
        train = list(range(n))
        rng.shuffle(train)
        return train, []
    target = min(n - 1, max(1, round(n * fraction)))
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    groups = list(by_key.values()) if len(by_key) > 1 else [[i] for i in range(n)]
    rng.shuffle(groups)
    validation: list[int] = []
    for group in groups:
        if len(validation) + len(group) <= target:
            validation.extend(group)
    if not validation:  # every group is bigger than the target: take the smallest
        validation = list(min(groups, key=len))
    held_out = set(validation)
    train = [i for group in groups for i in group if i not in held_out]
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation
