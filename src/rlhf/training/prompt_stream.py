"""An endless, reproducible stream of prompt batches for RL stages.

Batch ``i`` is a pure function of (seed, i): the prompts are reshuffled every pass, and a
resumed run asks for batch ``i`` and gets exactly what the killed run would have had. So the
position in the stream is just the iteration number, which checkpoints already hold."""

from __future__ import annotations

import random


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """Indices into ``n`` prompts for batch ``iteration`` of size ``batch_size``."""
    if n == 0:
        raise ValueError("no prompts to sample from")
    out: list[int] = []
    start = iteration * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        take = min(batch_size - len(out), n - offset)
        out += order[offset : offset + take]
    return out
