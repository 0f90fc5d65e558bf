"""Length-grouped batches: similar lengths share a batch, so padding stays small without
padding everything to a global maximum (the padding itself is ``rlhf.modeling.padding``)."""

from __future__ import annotations

import random


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 50
) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches of similar length, in an order fixed by
    ``(seed, epoch)`` (so a resumed run sees the same batches).

    The data is shuffled, cut into chunks of ``group * batch_size``, each chunk sorted by
    length and cut into batches; then the batch order is shuffled. Sorting only within a chunk
    keeps batches random enough for SGD while cutting most of the padding."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    chunk = group * batch_size
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches
